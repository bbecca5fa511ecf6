rule train:
    input:
        proteins="results/data/{dataset}/proteins.parquet",
        cache=f"results/embeddings/{{dataset}}/{ESM_NAME}.parquet",
    output:
        metrics="results/runs/{dataset}/{encoder}/{fusion}/seed{seed}/metrics.json",
        model="results/runs/{dataset}/{encoder}/{fusion}/seed{seed}/model.pt",
        curve="results/runs/{dataset}/{encoder}/{fusion}/seed{seed}/curve.csv",
    conda:
        "../envs/bihmf.yaml"
    log:
        "logs/train/{dataset}/{encoder}/{fusion}/seed{seed}.log",
    benchmark:
        "benchmarks/train/{dataset}/{encoder}/{fusion}/seed{seed}.tsv"
    params:
        task=lambda wc: config["datasets"][wc.dataset]["task"],
        task_options=lambda wc: {"num_classes": config["datasets"][wc.dataset]["num_classes"]},
        model=config["model"],
        train=config["train"],
    threads: config["train"]["threads"]
    resources:
        gpu=1,
        mem_mb=config["train"]["mem_mb"],
        runtime=config["train"]["runtime_min"],
    script:
        "../workflow_scripts/train.py"
