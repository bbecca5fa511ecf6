"""The targets of issue 26's GPU check, read from what ``bench/gpu_check.sh`` wrote under OUT.

``python -m bench.gpu_targets OUT`` prints each target (met, not met, or not measured when its
step left no result) and writes them to ``OUT/targets.json``. The thresholds are the benchmarks'
own (``bench.embed_vs_extract.targets``, ``bench.data_path.loop_targets``), so the check and
BENCHMARKS.md cannot disagree; on a GPU they are the issue's: embed >= 1.3x extract.py's
residues/s at the same precision, data share <= 10 % of a step, steps/s >= 2x the old loop.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import data_path, embed_vs_extract
from bench.common import Target
from bihmf.io import write_json_atomic

EMBED_STEPS = ("embed-float32", "embed-float16")


def result_file(folder: Path, name: str) -> dict[str, Any] | None:
    """The one result file of benchmark ``name`` in a step's folder (CPU or GPU name), if any."""
    found = sorted(folder.glob(f"{name}*.json"))
    return json.loads(found[0].read_text()) if found else None


def missing(step: str, what: str) -> Target:
    return Target(f"{step}: {what}", "a result", "none", False, f"the step left no result: see {step}.log")


def embed_targets(out: Path, step: str) -> list[Target]:
    """Speed of the embed jobs against extract.py at the step's precision, and their agreement."""
    result = result_file(out / step, embed_vs_extract.NAME)
    if result is None:
        return [missing(step, "embed vs extract.py")]
    found = [
        Target(f"{step}: {t.name}", t.goal, t.measured, t.met, t.note)
        for t in embed_vs_extract.targets(result) if t.name.startswith("ESM cache speed")
    ]
    for size, sized in result["results"].items():
        a = sized["sets"]["unique"]["agreement"]
        found.append(Target(
            f"{step}: agreement with extract.py, {size}", "reported",
            f"max diff {a['max_abs_diff']:.3g} ({a['max_diff_over_tolerance']:.2f} float16 steps), "
            f"{a['values_beyond_tolerance']:,} of {a['values_compared']:,} values beyond one step",
            None, "both sides at the same precision; float16 steps at the reference value",
        ))
    return found


def loop_targets(out: Path) -> list[Target]:
    result = result_file(out / "train-loop", data_path.NAME)
    return data_path.loop_targets(result) if result else [missing("train-loop", "training loop old vs new")]


def plan_targets(out: Path) -> list[Target]:
    calibration = out / "calibration.json"
    try:
        saved = json.loads(calibration.read_text())
    except (OSError, ValueError) as exc:
        return [Target("plan: --save-calibration", "a calibration file", "none", False, f"{calibration}: {exc}; see plan.log")]
    return [Target("plan: --save-calibration", "a calibration file", f"{calibration.name}, keys {', '.join(sorted(saved))}", True, "")]


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    found = [t for step in EMBED_STEPS for t in embed_targets(out, step)] + loop_targets(out) + plan_targets(out)
    for t in found:
        print(f"{t.status}: {t.name} (target: {t.goal}): {t.measured}")
    write_json_atomic(out / "targets.json", [{**asdict(t), "status": t.status} for t in found])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
