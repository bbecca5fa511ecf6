rule train:
    input:
        proteins="results/data/{dataset}/proteins.parquet",
        cache=ESM_INDEX,
    output:
        metrics="results/runs/{dataset}/{encoder}/{fusion}/seed{seed}/metrics.json",
        model="results/runs/{dataset}/{encoder}/{fusion}/seed{seed}/model.pt",
        curve="results/runs/{dataset}/{encoder}/{fusion}/seed{seed}/curve.csv",
        predictions="results/runs/{dataset}/{encoder}/{fusion}/seed{seed}/test_predictions.parquet",
    conda:
        "../envs/bihmf.yaml"
    log:
        "logs/train/{dataset}/{encoder}/{fusion}/seed{seed}.log",
    benchmark:
        "benchmarks/train/{dataset}/{encoder}/{fusion}/seed{seed}.tsv"
    params:
        task=lambda wc: config["datasets"][wc.dataset]["task"],
        task_options=lambda wc: {"num_classes": config["datasets"][wc.dataset]["num_classes"]},
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
