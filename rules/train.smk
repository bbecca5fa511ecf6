from bihmf.layout import ABLATION_TRAIN_BENCHMARK
from bihmf.run import CURVE_FILE, MODEL_FILE, TEST_PREDICTIONS_FILE
from bihmf.tasks import task_options


rule train:
    input:
        proteins=PROTEINS,
        cache=MAIN_INDEX,
        shards=main_shards,  # read through the index: a missing or removed shard is rebuilt
    output:
        metrics=f"{RUN_DIR}/{METRICS_FILE}",
        model=f"{RUN_DIR}/{MODEL_FILE}",
        curve=f"{RUN_DIR}/{CURVE_FILE}",
        predictions=f"{RUN_DIR}/{TEST_PREDICTIONS_FILE}",
    conda:
        "../envs/bihmf.yaml"
    log:
        LOGS["train"],
    benchmark:
        TRAIN_BENCHMARK
    params:
        task=lambda wc: config["datasets"][wc.dataset]["task"],
        task_options=lambda wc: task_options(config["datasets"][wc.dataset]),
        graph_residues=lambda wc: config["datasets"][wc.dataset]["graph_residues"],
        model=lambda wc: model_settings(wc.dataset, wc.encoder),
        train=lambda wc: train_settings(wc.dataset, wc.encoder),
    threads: lambda wc: train_settings(wc.dataset)["threads"]
    resources:
        gpu=1,
        # a retry (--retries, profiles/slurm) asks for more: attempt 2 gets twice the memory
        mem_mb=lambda wc, attempt: train_settings(wc.dataset)["mem_mb"] * attempt,
        runtime=lambda wc: train_settings(wc.dataset)["runtime_min"],
    script:
        "../workflow_scripts/train.py"


# a run of an ablation variant: the same job with the variant's settings, ESM cache and folder
use rule train as train_ablation with:
    input:
        proteins=PROTEINS,
        cache=variant_index,
        shards=variant_shards,
    output:
        metrics=f"{ABLATION_RUN_DIR}/{METRICS_FILE}",
        model=f"{ABLATION_RUN_DIR}/{MODEL_FILE}",
        curve=f"{ABLATION_RUN_DIR}/{CURVE_FILE}",
        predictions=f"{ABLATION_RUN_DIR}/{TEST_PREDICTIONS_FILE}",
    log:
        LOGS["train_ablation"],
    benchmark:
        ABLATION_TRAIN_BENCHMARK
    params:
        model=lambda wc: variant_run(wc).settings.model,
        train=lambda wc: variant_run(wc).settings.train,
        ablation=lambda wc: variant_run(wc).provenance,
