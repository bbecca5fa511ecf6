# Batch predictions with a trained run (logic: bihmf.predict, the `bihmf predict` command):
#   snakemake predict --cores 2 --config predict_run=results/runs/<dataset>/<encoder>/<fusion>/seed<k> predict_in=<folder or file>
# A run of this workflow that is not trained yet is trained first (its files are this rule's inputs).
# predict_request() (the run folder and structure files asked for) is in rules/common.smk.
from bihmf.predict import SUMMARY_FILE
from bihmf.run import METRICS_FILE, MODEL_FILE

PREDICT_OUT = config["predict_out"]


rule predict:
    input:
        model=lambda wc: f"{predict_request()[0]}/{MODEL_FILE}",
        metrics=lambda wc: f"{predict_request()[0]}/{METRICS_FILE}",
        structures=lambda wc: predict_request()[1],
    output:
        summary=f"{PREDICT_OUT}/{SUMMARY_FILE}",
    conda:
        "../envs/bihmf.yaml"
    log:
        LOGS["predict"],
    params:
        args=config["predict_args"],
    threads: 2
    resources:
        gpu=1,
    script:
        "../workflow_scripts/predict.py"
