rule embed:
    input:
        proteins="results/data/{dataset}/proteins.parquet",
        checkpoint=rules.esm_checkpoint.output.model,
        regression=rules.esm_checkpoint.output.regression,
    output:
        f"results/embeddings/{{dataset}}/{ESM_NAME}.parquet",
    conda:
        "../envs/bihmf.yaml"
    log:
        f"logs/embed/{{dataset}}/{ESM_NAME}.log",
    params:
        layers=ESM_LAYERS,
        esm=config["esm"],
    threads: 2
    resources:
        gpu=1,
    script:
        "../workflow_scripts/embed.py"
