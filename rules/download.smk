from bihmf.data.fetch import without_checksums
from bihmf.esm_checkpoint import checkpoint_source
from bihmf.layout import ESM_REGRESSION, ESM_SHA256, RAW_DIR


rule download_dataset:
    output:
        directory(RAW_DIR),
    conda:
        "../envs/bihmf.yaml"
    log:
        LOGS["download_dataset"],
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
        regression=ESM_REGRESSION,
        # its sha256, hashed once here for every embed job (bihmf.io.record_sha256)
        sha256=ESM_SHA256,
    conda:
        "../envs/bihmf.yaml"
    log:
        LOGS["esm_checkpoint"],
    params:
        source=lambda wc: without_checksums(checkpoint_source(ESM_MODELS[wc.esm])),
        downloads="resources/downloads",
        base_dir=workflow.basedir,
    script:
        "../workflow_scripts/esm_checkpoint.py"
