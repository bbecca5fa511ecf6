# Batch predictions with a trained run (logic: bihmf.predict, the `bihmf predict` command):
#   snakemake predict --cores 2 --config predict_run=results/runs/<dataset>/<encoder>/<fusion>/seed<k> predict_in=<folder or file>
# A run of this workflow that is not trained yet is trained first (its files are this rule's inputs).
from pathlib import Path

from bihmf.predict import SUMMARY_FILE
from bihmf.predict.structures import expand_inputs
from bihmf.run import METRICS_FILE, MODEL_FILE

PREDICT_OUT = config["predict_out"]


def predict_request():
    """(run folder, structure files) of target predict; a clear error when --config lacks them."""
    if not config["predict_run"] or not config["predict_in"]:
        raise ValueError("target predict needs --config predict_run=<run folder> predict_in=<structure folder, file or [list]>")
    given = [config["predict_in"]] if isinstance(config["predict_in"], str) else config["predict_in"]
    files = expand_inputs([Path(p) for p in given])
    if not files:
        raise ValueError(f"predict_in={config['predict_in']}: no structure files (.pdb/.ent/.cif/.mmcif, optionally .gz)")
    return config["predict_run"], [str(f) for f in files]


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
        "logs/predict/predict.log",
    params:
        args=config["predict_args"],
    threads: 2
    resources:
        gpu=1,
    script:
        "../workflow_scripts/predict.py"
