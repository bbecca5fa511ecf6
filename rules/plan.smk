# Cost plan before launch (logic: bihmf.plan, the `bihmf plan` command), not part of `all`:
#   snakemake plan --cores 1
# Calibrates every configured encoder x fusion at its configured width on the job's GPU (without
# one: priced from the calibration the package ships, bihmf/calibration/) and reads
# results/data/<d>/proteins.parquet where preprocessed (else published sizes); rerun with
# --forcerun plan after preprocessing. A saved calibration: bihmf plan --calibration FILE.
from bihmf.layout import PLAN


rule plan:
    output:
        PLAN,
    conda:
        "../envs/bihmf.yaml"
    log:
        LOGS["plan"],
    params:
        written=WRITTEN_CONFIG,
    resources:
        gpu=1,
    script:
        "../workflow_scripts/plan.py"
