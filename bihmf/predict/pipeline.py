"""The ``bihmf predict`` loop: load the run once, then each file through records, embeddings,
graphs and the model into table rows; one bad file is a line in the summary, not a failure."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from bihmf.batching import collate, in_order_batches, protein_graph, residue_mask
from bihmf.data.ligand import read_ligand
from bihmf.data.schema import ProteinRecord
from bihmf.data.structure import is_mmcif
from bihmf.gpu import pick_device
from bihmf.integrity import check_inputs
from bihmf.io import write_json_atomic
from bihmf.models.model import ProteinModel
from bihmf.predict.embeddings import ChainEmbeddings
from bihmf.predict.options import TABLE_FORMATS, InputError, PredictOptions, RunError
from bihmf.predict.outputs import plot_scores, protein_row, residue_rows, write_bfactor_copy, write_table
from bihmf.predict.structures import (
    chain_name, expand_inputs, file_records, output_names, pair_ligands, pocket_mask, pocket_residues, protein_chains, with_ligand,
)
from bihmf.predict.trained import build_trained_model, load_run
from bihmf.run import IDENTITY, TrainedRun
from bihmf.tasks import TASKS

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
PREDICTIONS_STEM = "predictions"


def run_model(model: ProteinModel, task: ModuleType, graphs: list[Any], budget: int, device: torch.device) -> list[Any]:
    """The task's outputs per graph; batches as in training, a protein above the budget on its own."""
    outputs: list[Any] = []
    with torch.no_grad():
        for ids in in_order_batches(graphs, max(budget, *(g.num_nodes for g in graphs))):
            batch = collate([graphs[i] for i in ids], device)
            outputs.extend(task.outputs(model(batch), batch, model.head))
    return outputs


@dataclass
class FileOutcome:
    """One input file's line of the summary."""

    file: str
    name: str
    status: str = "failed"
    error: str = ""
    proteins: int = 0
    residues: int = 0
    chains_from_cache: int = 0
    chains_embedded: int = 0
    residues_without_ca: dict[str, int] = field(default_factory=dict)  # per predicted chain: skipped, no CA
    skipped_chains: dict[str, str] = field(default_factory=dict)  # chain -> why it is not a protein chain
    outputs: list[str] = field(default_factory=list)


@dataclass
class Predictor:
    """Everything loaded once for all files: the run, its model, the embedding source."""

    run: TrainedRun
    options: PredictOptions
    device: torch.device
    model: ProteinModel
    embeddings: ChainEmbeddings | None

    @property
    def task(self) -> ModuleType:
        return TASKS[self.run.spec.task]

    def records(self, path: Path, name: str, ligand_path: Path | None, outcome: FileOutcome) -> list[ProteinRecord]:
        """The file's proteins, with the ligand's atoms and, for pocket runs, the pocket marked;
        the chains left out and the residues skipped for lacking a CA go into ``outcome``."""
        chains, outcome.skipped_chains = protein_chains(path, self.options)
        outcome.residues_without_ca = {chain_name(c.chain): c.residues_without_ca for c in chains}
        records = file_records(path, name, chains, self.options)
        if ligand_path is None:
            return records
        ligand = read_ligand(ligand_path)
        if self.run.spec.graph_residues != "pocket":
            return [with_ligand(r, ligand, None) for r in records]
        cutoff = self.options.pocket_cutoff
        near = pocket_residues(path, ligand, cutoff, self.options.model_index)
        return [with_ligand(r, ligand, pocket_mask(path, r, near, cutoff)) for r in records]

    def file_rows(self, path: Path, name: str, ligand_path: Path | None, outcome: FileOutcome) -> list[dict[str, Any]]:
        """Table rows of one file (InputError and other ValueErrors name the file's problem)."""
        records = self.records(path, name, ligand_path, outcome)
        esm: list[np.ndarray | None] = [None] * len(records)
        if self.embeddings is not None:
            esm, outcome.chains_from_cache, outcome.chains_embedded = self.embeddings.proteins(records)
        check_inputs(records, esm, path)
        residues = self.run.spec.graph_residues
        keeps = [residue_mask(r, residues) for r in records]
        graphs = [protein_graph(r, e, residues) for r, e in zip(records, esm, strict=True)]
        values = run_model(self.model, self.task, graphs, self.run.provenance["train_config"]["residue_budget"], self.device)
        outcome.proteins, outcome.residues = len(records), sum(len(r.sequence) for r in records)
        made = zip(records, keeps, values, strict=True)
        if self.task.PER_RESIDUE:
            return [row for r, k, v in made for row in residue_rows(str(path), r, k, v, self.task)]
        return [protein_row(str(path), r, k, v, ligand_path, self.task) for r, k, v in made]

    def residue_extras(self, path: Path, name: str, rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
        """B-factor copy and plot of one file's per-residue scores."""
        suffix = ".cif" if is_mmcif(path) else ".pdb"
        structure_out = out_dir / "structures" / f"{name}{suffix}"
        scores = {(row["chain"], row["resnum"], row["icode"]): row["score"] for row in rows}
        write_bfactor_copy(path, self.options.model_index, scores, structure_out)
        plot_out = out_dir / "plots" / f"{name}.png"
        spec = self.run.spec
        title = f"{name}: {spec.dataset} {spec.encoder}/{spec.fusion}/seed{spec.seed}"
        plot_scores(title, "predicted probability", rows, plot_out)
        return [structure_out, plot_out]

    def predict_file(self, path: Path, name: str, ligand: Path | None, table: Path, out_dir: Path) -> tuple[FileOutcome, list[dict[str, Any]]]:
        """One file's summary line and table rows (no rows when it failed)."""
        outcome = FileOutcome(str(path), name)
        try:
            if not path.is_file():
                raise InputError(f"{path}: no such file")
            rows = self.file_rows(path, name, ligand, outcome)
            extras = self.residue_extras(path, name, rows, out_dir) if self.task.PER_RESIDUE and self.options.structures else []
        except (ValueError, OSError) as exc:
            outcome.error = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            log.warning("%s", outcome.error)
            return outcome, []
        outcome.status = "ok"
        outcome.outputs = [str(table), *map(str, extras)]
        return outcome, rows


def make_predictor(run: TrainedRun, options: PredictOptions) -> Predictor:
    if options.threads:
        torch.set_num_threads(options.threads)
    device = pick_device() if options.device == "auto" else torch.device(options.device)
    embeddings = ChainEmbeddings(run, options, device) if run.reads_esm else None
    return Predictor(run, options, device, build_trained_model(run, device), embeddings)


def predict(run_dir: Path, inputs: list[Path], out_dir: Path, options: PredictOptions) -> dict[str, Any]:
    """Predict every input file with the run; write the table, per-residue extras and ``summary.json``.

    Returns the summary. A RunError stops everything before any file is read; a problem with one
    file is recorded in its summary line and the other files are predicted.
    """
    if options.table_format not in TABLE_FORMATS:
        raise RunError(f"table format {options.table_format!r}; expected one of {TABLE_FORMATS}")
    run = load_run(run_dir)
    files = expand_inputs(inputs)
    if not files:
        raise RunError(f"no structure files in {[str(p) for p in inputs]}")
    ligands = pair_ligands(files, run, options)
    predictor = make_predictor(run, options)
    table = out_dir / f"{PREDICTIONS_STEM}.{options.table_format}"
    results = [predictor.predict_file(path, name, ligand, table, out_dir)
               for path, name, ligand in zip(files, output_names(files), ligands, strict=True)]
    rows = [row for _, file_rows in results for row in file_rows]
    if rows:
        write_table(rows, table, options.table_format)
    else:  # no stale table from an earlier call may pass for this one's
        table.unlink(missing_ok=True)
    outcomes = [outcome for outcome, _ in results]
    summary = {
        "run": str(run_dir),
        **{key: getattr(run.spec, key) for key in IDENTITY},
        "predictions": str(table) if rows else None,
        "succeeded": sum(o.status == "ok" for o in outcomes),
        "failed": sum(o.status != "ok" for o in outcomes),
        "files": [dataclasses.asdict(o) for o in outcomes],
    }
    write_json_atomic(out_dir / SUMMARY_FILE, summary)
    return summary
