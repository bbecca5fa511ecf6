"""Measuring a plan's calibration on this machine's device: the real training step of every
combination and the embed stage's forward, each in seconds per residue.

Seconds per residue of training are measured by the training loop itself
(:func:`bihmf.engine.time_training_steps`: forward, loss, backward, clipping, AdamW under the
device's autocast) on a few real proteins (the PPBS demo of the workflow folder) with seeded
random ESM rows of the configured width. Embed seconds time the embed stage's own forward
(:func:`calibrate_embed`). Progress goes to the log (stderr under ``bihmf plan``), one line per
combination, since a full benchmark's calibration takes minutes.
"""

from __future__ import annotations

import logging
import os
import platform
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from esm.data import Alphabet
from esm.model.esm2 import ESM2
from torch_geometric.data import Data

from bihmf import __version__
from bihmf.batching import protein_graph
from bihmf.benchmark import Benchmark, load_config
from bihmf.data import DATASETS
from bihmf.data.schema import ProteinRecord
from bihmf.engine import time_training_steps
from bihmf.esm import embed_sequences
from bihmf.esm_checkpoint import RELEASED_ESM2, esm_depth, load_esm, write_random_checkpoint
from bihmf.esm_cache import EmbedSettings, chain_sequences
from bihmf.models.fusion import FusionContext
from bihmf.models.model import build_model, reads_esm
from bihmf.plan_calibration import Calibration, Combination, EmbedCalibration, cpu_name, esm_width
from bihmf.run import RunSpec
from bihmf.tasks import TASKS, task_options

log = logging.getLogger(__name__)

# the calibration's chains and random-init ESM shape: the demo of the workflow folder (not of the
# installed package, which has no config/ nor demo/ beside it in a non-editable install)
DEMO_CONFIG = Path("config") / "demo.yaml"
CALIBRATION_DATASET = "ppbs_demo"  # real PDB chains with per-residue labels, shipped in demo/


def calibration_context(esm_cfg: dict[str, Any], layers: list[int], model: dict[str, Any]) -> FusionContext:
    """The fusion context of a run reading a cache of ``layers`` of this ESM model."""
    return FusionContext.of(model, esm_width(esm_cfg), esm_depth(esm_cfg), layers)


def demo_records(workflow: Path = Path(".")) -> list[ProteinRecord]:
    """The PPBS demo's chains (real structures) of the ``workflow`` folder, parsed by the real parser."""
    spec = load_config(workflow / DEMO_CONFIG)["datasets"][CALIBRATION_DATASET]
    with tempfile.TemporaryDirectory() as raw:
        with tarfile.open(workflow / spec["download"]["archive"]["url"].removeprefix("file:")) as archive:
            archive.extractall(raw, filter="data")
        return DATASETS[spec["kind"]].parse(Path(raw), spec)[0]


def calibration_records(records: list[ProteinRecord], residues: int) -> list[ProteinRecord]:
    """The first proteins up to ``residues`` residues, as training proteins with a target every
    task accepts (the timing does not depend on its value)."""
    chosen: list[ProteinRecord] = []
    for record in records:
        if chosen and sum(len(r.sequence) for r in chosen) + len(record.sequence) > residues:
            break
        chosen.append(replace(record, split="train", target=float(len(chosen) % 2)))
    return chosen


def calibrate(combo: Combination, spec: dict[str, Any], records: list[ProteinRecord], context: FusionContext,
              train_cfg: dict[str, Any], device: torch.device, steps: int) -> float:
    """Seconds per residue of ``combo``'s training step on ``records`` with the task of the
    dataset ``spec``, timed by the training loop itself (:func:`time_training_steps`). The budget
    is raised to hold every calibration protein, so each step is one full-size batch."""
    model_cfg = combo.settings()
    options = task_options(spec)
    torch.manual_seed(0)
    model = build_model(combo.encoder, combo.fusion, spec["task"], model_cfg, context, options).to(device)
    TASKS[spec["task"]].prepare(model.head, np.array([r.target for r in records]))
    graphs = calibration_graphs(records, context, reads_esm(combo.fusion, context))
    budget = max(train_cfg["residue_budget"], sum(g.num_nodes for g in graphs))
    run = RunSpec(CALIBRATION_DATASET, combo.encoder, combo.fusion, 0, spec["task"], options)
    timing = time_training_steps(run, model, records, graphs, {**train_cfg, "residue_budget": budget}, device, steps)
    return timing.seconds_per_residue


def calibration_graphs(records: list[ProteinRecord], context: FusionContext, with_esm: bool) -> list[Data]:
    """Graphs of ``records`` with seeded random ESM rows of the cache's shape: the values of
    the embeddings do not change the time of a step, so no ESM is run or downloaded."""
    rng = np.random.default_rng(0)
    shape = (len(context.cache_layers), context.esm_dim)
    return [protein_graph(r, rng.standard_normal((len(r.sequence), *shape), dtype=np.float32) if with_esm else None)
            for r in records]


def random_esm(esm_cfg: dict[str, Any]) -> tuple[ESM2, Alphabet]:
    """The random-init ESM of ``esm_cfg``, loaded as the embed stage loads a checkpoint."""
    shape = esm_cfg["random_init"]
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / f"{esm_cfg['name']}.pt"  # fair-esm reads the architecture from the name
        write_random_checkpoint(checkpoint, shape["num_layers"], shape["embed_dim"], shape["attention_heads"], shape["seed"])
        return load_esm(checkpoint)


def time_embed(model: ESM2, alphabet: Alphabet, chains: dict[str, str], settings: EmbedSettings,
               device: torch.device) -> float:
    """Seconds per residue of ``embed_sequences`` on ``chains``, after one untimed pass (first calls)."""
    layers = [model.num_layers]
    embed_sequences(model, alphabet, chains, layers, settings, device=device)
    _sync(device)
    started = time.perf_counter()
    embed_sequences(model, alphabet, chains, layers, settings, device=device)
    _sync(device)
    return (time.perf_counter() - started) / sum(len(seq) for seq in chains.values())


def calibrate_embed(esm_cfg: dict[str, Any], records: list[ProteinRecord], device: torch.device,
                    workflow: Path = Path(".")) -> EmbedCalibration:
    """Seconds per residue of the embed stage's forward. A random-init config is timed itself;
    a released model is not downloaded: the demo's random-init shape is timed and scaled by the
    parameter ratio (per-residue cost ∝ parameters, attention's length-squared term ignored)."""
    released = "random_init" not in esm_cfg
    if released and esm_cfg["name"] not in RELEASED_ESM2:
        raise ValueError(f"esm.name {esm_cfg['name']!r}: parameter count unknown to the plan (known: {sorted(RELEASED_ESM2)})")
    timed_cfg = load_config(workflow / DEMO_CONFIG)["esm"] if released else esm_cfg
    model, alphabet = random_esm(timed_cfg)
    chains = dict(pair for r in records for pair in chain_sequences(r.sequence, r.chain_ids))
    timed = time_embed(model, alphabet, chains, EmbedSettings.from_config(esm_cfg), device)
    if not released:
        return EmbedCalibration(timed, f"timed: {esm_cfg['name']}")
    parameters = sum(p.numel() for p in model.parameters())
    ratio = RELEASED_ESM2[esm_cfg["name"]].parameters / parameters
    note = f"extrapolated: {timed_cfg['name']} ({parameters:,} parameters) timed, × {ratio:,.0f} for {esm_cfg['name']}"
    return EmbedCalibration(timed * ratio, note)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model with the threads torch computes on (its speed depends on them)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"{cpu_name()}, {threads} thread{'' if threads == 1 else 's'}"


def new_calibration(device: torch.device, steps: int, records: list[ProteinRecord], width: int | None) -> Calibration:
    """An empty calibration of this device, dated now, with the versions and shapes it will hold."""
    versions = {"bihmf": __version__, "torch": torch.__version__, "python": platform.python_version()}
    return Calibration(device.type, device_name(device), datetime.now(timezone.utc).isoformat(timespec="seconds"), versions,
                       steps, sum(len(r.sequence) for r in records), width, {}, {}, {})


def busy_cpu(threads: int) -> str | None:
    """Why CPU timings would be inflated now, or None. With more torch threads than free cores,
    every parallel region waits for a descheduled thread: a calibration made under a load of
    12-18 on 2 cores priced some steps 15x and the embed forward 120x too high."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load + threads <= cores + 0.5:
        return None
    return (f"the CPU is busy (1-min load average {load:.1f} on {cores} cores) and torch computes on {threads} threads: "
            f"these timings will be too high; calibrate on an idle machine, or with OMP_NUM_THREADS at most the free cores")


def measure(benchmark: Benchmark, first: dict[Combination, str], device: torch.device, records: list[ProteinRecord],
            calibration: Calibration, checkpoint: Callable[[Calibration], None], workflow: Path = Path(".")) -> Calibration:
    """Time every combination of ``first`` (each with the dataset of its first runs, whose task,
    cache and train settings it is measured with) and every ESM model's embed forward that
    ``calibration`` lacks, so a measurement cut short continues where it stopped.
    ``checkpoint`` receives the calibration after each measurement (``--save-calibration``
    writes it)."""
    models, caches = benchmark.esm_models, benchmark.caches
    todo = {combo: dataset for combo, dataset in first.items() if combo not in calibration.training}
    if device.type == "cpu" and (busy := busy_cpu(torch.get_num_threads())):
        log.warning("%s", busy)
    log.info("calibrating %d combinations on %s (%d already measured)", len(todo), calibration.device_name, len(first) - len(todo))
    for i, (combo, dataset) in enumerate(todo.items(), 1):
        started = time.perf_counter()
        layers = caches[(dataset, combo.esm)]
        context = calibration_context(models[combo.esm], layers, combo.settings())
        train = benchmark.settings(dataset, combo.encoder).train
        seconds = calibrate(combo, benchmark.config["datasets"][dataset], records, context, train, device, calibration.steps)
        calibration = replace(calibration, training={**calibration.training, combo: seconds},
                              shapes={**calibration.shapes, combo: {"esm_width": context.esm_dim, "cache_layers": list(layers)}})
        checkpoint(calibration)
        log.info("calibrated %d/%d %s: %.3g s/residue (%.0f s)", i, len(todo), combo.label, seconds, time.perf_counter() - started)
    for name, esm_cfg in models.items():
        if name not in calibration.embed:
            embed = calibrate_embed(esm_cfg, records, device, workflow)
            calibration = replace(calibration, embed={**calibration.embed, name: embed})
            checkpoint(calibration)
            log.info("calibrated the embed forward of %s: %.3g s/residue (%s)", name, embed.s_per_residue, embed.note)
    return calibration
