from bihmf.data.fetch import without_checksums


rule download_dataset:
    output:
        directory("resources/datasets/{dataset}/raw"),
    conda:
        "../envs/bihmf.yaml"
    log:
        "logs/download/{dataset}.log",
    params:
        # what triggers a new download; checksums left out (pinning one reruns nothing), the script reads the config
        source=lambda wc: without_checksums(config["datasets"][wc.dataset]),
        downloads="resources/downloads",
        base_dir=workflow.basedir,
    script:
        "../workflow_scripts/download_dataset.py"


rule esm_checkpoint:
    output:
        model=ESM_CHECKPOINT,
        regression=ESM_CHECKPOINT.replace(".pt", "-contact-regression.pt"),
        # its sha256, hashed once here for every embed job (bihmf.io.record_sha256)
        sha256=f"{ESM_CHECKPOINT}.sha256.json",
    conda:
        "../envs/bihmf.yaml"
    log:
        "logs/esm_checkpoint/{esm}.log",
    params:
        source=lambda wc: without_checksums(ESM_MODELS[wc.esm]),
        downloads="resources/downloads",
        base_dir=workflow.basedir,
    script:
        "../workflow_scripts/esm_checkpoint.py"
