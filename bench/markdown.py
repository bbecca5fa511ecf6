"""Write BENCHMARKS.md from the result files in ``bench/results/`` and the prose template.

The template (``bench/BENCHMARKS.template.md``) holds headings and method prose without
figures; every figure comes from a result file through the benchmark's own ``render`` and
``targets``. Placeholders: ``{{summary}}`` (every target of every benchmark and device),
``{{esm_shapes}}``, ``{{suite_wall}}`` and ``{{<benchmark name>}}`` (its section).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.common import ESM_SHAPES, PYTHON, Target, machine_line, result_path, table
from bihmf.io import write_text_atomic

TEMPLATE = Path(__file__).with_name("BENCHMARKS.template.md")
BENCHES = ("embed_vs_extract", "cache_writer", "train_step", "data_path", "preprocess_throughput", "dag_build", "model_cost", "rehearsal", "download_rehearsal", "precision")
DEVICES = {"cpu": "CPU", "cuda": "GPU"}


def module(name: str) -> ModuleType:
    return importlib.import_module(f"bench.{name}")


def results(folder: Path, name: str) -> dict[str, dict[str, Any]]:
    """The result files of one benchmark that exist, by device type."""
    found = {device: result_path(folder, name, device) for device in DEVICES}
    return {device: json.loads(path.read_text()) for device, path in found.items() if path.exists()}


def target_lines(targets: list[Target]) -> str:
    return "\n".join(
        f"- **{t.status}**: {t.name} (target: {t.goal}): {t.measured}. {t.note[:1].upper()}{t.note[1:]}." for t in targets
    )


def device_block(name: str, result: dict[str, Any]) -> str:
    """One benchmark's result on one device: command, machine, tables, targets."""
    bench = module(name)
    parts = [
        (
            f"**{DEVICES[result['machine']['device']]}.** Command: `{result['command']}` "
            f"({result['wall_seconds']} s). Machine: {machine_line(result['machine'])}."
        ),
        bench.render(result),
    ]
    found = bench.targets(result)
    if found:
        parts.append(target_lines(found))
    return "\n\n".join(parts)


def section(folder: Path, name: str) -> str:
    found = results(folder, name)
    if not found:
        return f"_Not measured yet: run `{PYTHON} -m bench.{name}`._"
    return "\n\n".join(device_block(name, result) for _, result in sorted(found.items()))


def summary(folder: Path) -> str:
    rows = [
        [DEVICES[device], t.name, t.goal, t.measured, t.status]
        for name in BENCHES
        for device, result in sorted(results(folder, name).items())
        for t in module(name).targets(result)
    ]
    return table(["device", "target", "goal", "measured", "status"], rows) if rows else "_No results yet._"


def esm_shapes() -> str:
    return ", ".join(
        f"{name} = {s['num_layers']} layers x {s['embed_dim']}, {s['attention_heads']} heads" for name, s in ESM_SHAPES.items()
    )


def suite_wall(folder: Path) -> str:
    """How long the benchmarks behind this file took, per device, from their result files."""
    seconds = {device: 0 for device in DEVICES}
    for name in BENCHES:
        for device, result in results(folder, name).items():
            seconds[device] += result["wall_seconds"]
    return ", ".join(f"{s / 60:.0f} min on the {DEVICES[device]} machine" for device, s in seconds.items() if s)


def write_report(folder: Path, report: Path) -> None:
    text = TEMPLATE.read_text()
    fills = {"summary": summary(folder), "esm_shapes": esm_shapes(), "suite_wall": suite_wall(folder)}
    fills.update({name: section(folder, name) for name in BENCHES})
    for key, value in fills.items():
        text = text.replace(f"{{{{{key}}}}}", value)
    write_text_atomic(report, text)
