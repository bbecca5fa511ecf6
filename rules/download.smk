rule download_dataset:
    output:
        directory("resources/datasets/{dataset}/raw"),
    conda:
        "../envs/bihmf.yaml"
    log:
        "logs/download/{dataset}.log",
    params:
        spec=lambda wc: config["datasets"][wc.dataset],
        downloads="resources/downloads",
        base_dir=workflow.basedir,
    script:
        "../workflow_scripts/download_dataset.py"


rule esm_checkpoint:
    output:
        model=ESM_CHECKPOINT,
        regression=ESM_CHECKPOINT.replace(".pt", "-contact-regression.pt"),
        # its sha256, hashed once here for every embed job (bihmf.download.record_sha256)
        sha256=f"{ESM_CHECKPOINT}.sha256.json",
    conda:
        "../envs/bihmf.yaml"
    log:
        "logs/esm_checkpoint/{esm}.log",
    params:
        esm=lambda wc: ESM_MODELS[wc.esm],
        downloads="resources/downloads",
        base_dir=workflow.basedir,
    script:
        "../workflow_scripts/esm_checkpoint.py"
