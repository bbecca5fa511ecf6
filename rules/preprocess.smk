rule preprocess:
    input:
        "resources/datasets/{dataset}/raw",
    output:
        proteins="results/data/{dataset}/proteins.parquet",
        report="results/data/{dataset}/preprocess_report.json",
    conda:
        "../envs/bihmf.yaml"
    log:
        "logs/preprocess/{dataset}.log",
    params:
        spec=lambda wc: config["datasets"][wc.dataset],
    script:
        "../workflow_scripts/preprocess.py"
