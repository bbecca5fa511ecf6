# bihmf: download -> preprocess -> embed -> train -> report.
# `snakemake all --cores 8 --resources gpu=2` (target first: --resources swallows a target after it).
import copy
import os
from pathlib import Path

from snakemake.utils import min_version

from bihmf.benchmark import check_config
from bihmf.config import ConfigError, coerce_cli_strings

min_version("9.19")  # profiles/*/profile.yaml needs 9.19

# --configfile gives a complete config (e.g. config/demo.yaml) that replaces config.yaml;
# --config key=value overrides single keys of whichever config is in use.
if not workflow.overwrite_configfiles:
    configfile: os.path.join(workflow.basedir, "config.yaml")


coerce_cli_strings(config)
WRITTEN_CONFIG = copy.deepcopy(config)  # as written: published recipes yield to these, not to schema defaults
try:  # validated, defaults filled in (bihmf/schemas/config.schema.yaml)
    config.update(check_config(config, Path("logs/config_errors.txt")))
except ConfigError as error:  # the key and reason alone; the schema excerpts are in the file
    raise SystemExit(str(error))


report: "captions/workflow.rst"


include: "rules/common.smk"
include: "rules/integrity.smk"
include: "rules/download.smk"
include: "rules/preprocess.smk"
include: "rules/embed.smk"
include: "rules/train.smk"
include: "rules/report.smk"
include: "rules/predict.smk"
include: "rules/plan.smk"


rule all:
    default_target: True
    input:
        report_outputs(),
        ablation_report_outputs(),
        rebuildable_targets(),
