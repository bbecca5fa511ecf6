from bihmf.layout import ESM_REGRESSION, ESM_SHA256, RAW_DIR


rule download_dataset:
    output:
        directory(RAW_DIR),
    conda:
        "../envs/bihmf.yaml"
    log:
        LOGS["download_dataset"],
    params:
        spec=lambda wc: config["datasets"][wc.dataset],
        downloads="resources/downloads",
        base_dir=workflow.basedir,
    script:
        "../workflow_scripts/download_dataset.py"


rule esm_checkpoint:
    output:
        model=ESM_CHECKPOINT,
        regression=ESM_REGRESSION,
        # its sha256, hashed once here for every embed job (bihmf.download.record_sha256)
        sha256=ESM_SHA256,
    conda:
        "../envs/bihmf.yaml"
    log:
        LOGS["esm_checkpoint"],
    params:
        esm=lambda wc: ESM_MODELS[wc.esm],
        downloads="resources/downloads",
        base_dir=workflow.basedir,
    script:
        "../workflow_scripts/esm_checkpoint.py"
