"""A plan's calibration as a file: what one device's training step and embed forward cost per
residue, so a plan can be priced on a machine without that device (a GPU-less login node).

``bihmf plan --save-calibration FILE`` measures (:mod:`bihmf.plan_timing`) and writes it;
``bihmf plan --calibration FILE`` reads it and times nothing. The package ships the last
calibration measured by the project (:data:`SHIPPED`), used by a plain ``bihmf plan`` when no
GPU is visible. A file records the device, date, versions and shapes it was measured with; a
combination the file lacks is reported as missing, never priced from another one.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bihmf.esm_checkpoint import RELEASED_ESM2
from bihmf.io import read_json, write_json_atomic

FORMAT = "bihmf-calibration/1"
MEASURED_NOW = "measured now"
# the calibrations shipped with the package (found beside the module, also in a non-editable install)
SHIPPED = Path(__file__).parent / "calibration"


class CalibrationError(ValueError):
    """A calibration file that cannot be used; the message names the file and the reason."""


def esm_width(esm_cfg: dict[str, Any]) -> int:
    """Embedding width of the configured ESM, known before any download."""
    if "random_init" in esm_cfg:
        return int(esm_cfg["random_init"]["embed_dim"])
    if esm_cfg["name"] not in RELEASED_ESM2:
        raise ValueError(f"esm.name {esm_cfg['name']!r}: width unknown to the plan (known: {sorted(RELEASED_ESM2)})")
    return RELEASED_ESM2[esm_cfg["name"]].width


@dataclass(frozen=True)
class Combination:
    """What a training step's time depends on: runs that share it share a calibration. The task
    is that of the first dataset with these settings; heads are one or two linear layers, small
    beside the encoder and the fusion."""

    encoder: str
    fusion: str
    esm: str  # the ESM model whose rows the fusion reads (their width)
    model: str  # JSON of the model settings (recipe and variant applied), so the key is hashable

    def settings(self) -> dict[str, Any]:
        return json.loads(self.model)

    @property
    def label(self) -> str:
        return f"{self.encoder}/{self.fusion} on {self.esm}"


@dataclass(frozen=True)
class EmbedCalibration:
    s_per_residue: float  # of the configured ESM, extrapolated when it is not the one timed
    note: str


@dataclass(frozen=True)
class Calibration:
    """Seconds per residue of every combination and ESM model measured on one device, with what
    a reader needs to judge them: the device, when, with which versions, and the step size."""

    device: str  # torch device type: cpu or cuda
    device_name: str  # the GPU's name, or the CPU model
    date: str
    versions: dict[str, str]
    steps: int  # timed steps per combination
    step_residues: int  # residues of each timed step
    width: int | None  # the --width every model was measured at; None: configured widths
    training: dict[Combination, float]
    shapes: dict[Combination, dict[str, Any]]  # ESM width and cached layers each was measured with
    embed: dict[str, EmbedCalibration]  # per ESM model name
    note: str = ""  # where the numbers come from, when not one `bihmf plan` measurement
    source: str = MEASURED_NOW  # or the file read

    @property
    def hours_unit(self) -> str:
        return f"{'GPU' if self.device == 'cuda' else 'CPU'}-hours of {self.device_name}"


def _combination_json(combo: Combination, seconds: float, shape: dict[str, Any]) -> dict[str, Any]:
    return {"encoder": combo.encoder, "fusion": combo.fusion, "esm": combo.esm, "model": combo.settings(),
            **shape, "s_per_residue": seconds}


def calibration_json(calibration: Calibration) -> dict[str, Any]:
    return {
        "format": FORMAT, "device": calibration.device, "device_name": calibration.device_name, "date": calibration.date,
        "versions": calibration.versions, "steps": calibration.steps, "step_residues": calibration.step_residues,
        "width": calibration.width, "note": calibration.note,
        "training": [_combination_json(c, s, calibration.shapes[c]) for c, s in calibration.training.items()],
        "embed": [{"esm": name, "s_per_residue": e.s_per_residue, "note": e.note} for name, e in calibration.embed.items()],
    }


def write_calibration(calibration: Calibration, path: Path) -> None:
    write_json_atomic(path, calibration_json(calibration))


def _positive(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{where}: expected a positive number, got {value!r}")
    return float(value)


def _calibration(raw: dict[str, Any], path: Path) -> Calibration:
    if raw.get("format") != FORMAT:
        raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT!r}")
    training: dict[Combination, float] = {}
    shapes: dict[Combination, dict[str, Any]] = {}
    for i, entry in enumerate(raw["training"]):
        combo = Combination(entry["encoder"], entry["fusion"], entry["esm"], json.dumps(entry["model"], sort_keys=True))
        training[combo] = _positive(entry["s_per_residue"], f"training[{i}] ({combo.label})")
        shapes[combo] = {"esm_width": entry["esm_width"], "cache_layers": entry["cache_layers"]}
    embed = {e["esm"]: EmbedCalibration(_positive(e["s_per_residue"], f"embed {e['esm']}"), e["note"]) for e in raw["embed"]}
    return Calibration(raw["device"], raw["device_name"], raw["date"], raw["versions"], raw["steps"], raw["step_residues"],
                       raw["width"], training, shapes, embed, raw.get("note", ""), str(path))


def read_calibration(path: Path) -> Calibration:
    """The calibration in ``path``; a missing, broken or incomplete file is a
    :class:`CalibrationError` naming it and the reason."""
    try:
        raw = read_json(path, dict, "a calibration object")
    except OSError as err:
        raise CalibrationError(f"calibration {path}: cannot read it ({err.strerror})") from err
    except ValueError as err:  # its message starts with the path
        raise CalibrationError(f"calibration {err}") from err
    try:
        return _calibration(raw, path)
    except KeyError as err:
        raise CalibrationError(f"calibration {path}: missing key {err}") from err
    except (TypeError, ValueError) as err:
        raise CalibrationError(f"calibration {path}: {err}") from err


def shipped_calibration(folder: Path = SHIPPED) -> Calibration:
    """The newest calibration shipped in ``folder`` (by the date it records)."""
    found = [read_calibration(path) for path in sorted(folder.glob("*.json"))]
    if not found:
        raise CalibrationError(f"no shipped calibration in {folder}: calibrate with --device, or give --calibration FILE")
    return max(found, key=lambda calibration: calibration.date)


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (platform's answer elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next((line.partition(":")[2].strip() for line in lines if line.startswith("model name")), platform.processor() or "CPU")


def _differences(wanted: dict[str, Any], have: dict[str, Any]) -> str:
    keys = sorted(k for k in wanted.keys() | have.keys() if wanted.get(k) != have.get(k))
    return ", ".join(f"{k} {wanted.get(k)!r} (file: {have.get(k)!r})" for k in keys)


def missing_reason(combo: Combination, calibration: Calibration) -> str:
    """Why ``combo`` has no price in ``calibration``: absent, or there with other settings (named)."""
    alike = [c for c in calibration.training if (c.encoder, c.fusion, c.esm) == (combo.encoder, combo.fusion, combo.esm)]
    if not alike:
        return f"{combo.label}: not measured"
    nearest = min((_differences(combo.settings(), c.settings()) for c in alike), key=len)
    return f"{combo.label}: measured with other settings: {nearest}"
