from bihmf.layout import PREPROCESS_REPORT, RAW_DIR


rule preprocess:
    input:
        RAW_DIR,
    output:
        proteins=PROTEINS,
        report=PREPROCESS_REPORT,
    conda:
        "../envs/bihmf.yaml"
    log:
        LOGS["preprocess"],
    params:
        spec=lambda wc: config["datasets"][wc.dataset],
    script:
        "../workflow_scripts/preprocess.py"
