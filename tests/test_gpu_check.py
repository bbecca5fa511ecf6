"""The GPU check (bench/gpu_check.sh) cannot rot: its tiny mode runs every step on the CPU.

Nothing here checks a speed: tiny results measure nothing. What is checked is that every step
exits cleanly and leaves a result that parses, and that the targets step read them all.
Step embed-float16 needs the ``esm.precision`` config key and step plan needs
``bihmf plan --save-calibration``; on a tree without them those steps fail, and so does this test.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("embed-float32", "embed-float16", "train-loop", "plan", "targets")


def test_tiny_gpu_check_runs_every_step_and_leaves_parsable_results(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--tiny", "--device", "cpu", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=4500, check=False,
    )
    with (tmp_path / "steps.tsv").open() as steps:
        status = {row[0]: int(row[1]) for row in csv.reader(steps, delimiter="\t")}
    failed = {name: (tmp_path / f"{name}.log").read_text()[-2000:] for name, rc in status.items() if rc}
    assert list(status) == list(STEPS) and not failed, failed
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for step in ("embed-float32", "embed-float16"):
        result = json.loads((tmp_path / step / "embed_vs_extract.json").read_text())
        assert result["setup"]["precision"] == step.removeprefix("embed-") and result["setup"]["lengths"] == "scannet"
        assert set(result["results"]["t6"]["sets"]["unique"]["seconds"]) == {"baseline", "ours"}
    loop = json.loads((tmp_path / "train-loop" / "data_path.json").read_text())
    assert set(loop["results"]["loading"]["bihmf_global"]) >= {"old", "new"}  # tiny: the quick mode's one fusion
    assert json.loads((tmp_path / "calibration.json").read_text())
    targets = json.loads((tmp_path / "targets.json").read_text())
    names = " ".join(t["name"] for t in targets)
    assert "embed-float32" in names and "embed-float16" in names and "Data path" in names and "plan" in names
    assert not any(t["measured"] == "none" for t in targets)
