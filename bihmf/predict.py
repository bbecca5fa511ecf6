"""``bihmf predict``: a trained benchmark run applied to a user's own structures.

The run folder decides everything about the model; the command line only names the files, the
chains and where the outputs go. ``model.pt`` gives the weights, the :class:`RunSpec` (encoder,
fusion, task and its options, graph residues) and the model config; the provenance in
``metrics.json`` gives the ESM checkpoint's sha256, the layout of the embedding cache the model
read in training (layers, width, depth, window settings) and where that cache lies, whether the
training graphs carried ligand atoms, and the bihmf version. Before any file is read, a
:class:`RunError` stops the command for

* a checkpoint whose sha256 differs from the run's (other weights give other embeddings),
* a cache built from another checkpoint, lacking a layer the model reads, or windowed differently,
* a bihmf release series other than the run's (the model code may have changed),
* a ligand-trained run without ``--ligand`` (or the reverse), a pocket run without a cutoff.

Each file then goes the training path: :func:`bihmf.data.structure.read_chains` (same altloc,
HETATM and missing-atom rules), one protein of the chosen chains (as bce/psr/lba records are) or
one per chain (``per_chain``, as ppbs/react records are), ESM rows per chain from the run's cache
when its sequence hash is there and from the checkpoint otherwise (with the cache's window
settings), :func:`bihmf.training.protein_graph` with the run's ``graph_residues``, the model.
A file that cannot be predicted (missing, not a structure, no protein chain, only unknown
residues, no backbone, no pocket near its ligand) becomes an :class:`InputError` in the summary
and the other files go on.

LBA pockets: the amino-acid residues with any heavy atom within ``pocket_cutoff`` Å of any
ligand heavy atom. Training pockets come with the dataset (ATOM3D ships them), so the run cannot
know their cutoff; the user states it (the demo's LBA fixture used 6 Å, see
``tests/fixtures/README_atom3d.md``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from Bio.PDB import MMCIFIO, PDBIO, Select
from matplotlib.figure import Figure
from scipy.spatial import cKDTree
from torch import Tensor

from bihmf.config import SCHEMA_PATH
from bihmf.data.atom3d import HYDROGENS
from bihmf.data.ligand import Ligand, read_ligand
from bihmf.data.schema import ProteinRecord
from bihmf.data.structure import ATOM_NAMES, ChainResidues, is_mmcif, load_structure, one_letter, read_chains
from bihmf.download import file_digest
from bihmf.esm import EmbeddingCache, chain_sequences, embed_sequences, load_esm, regression_path
from bihmf.io import atomic_output, write_json_atomic
from bihmf.models.fusion import FusionContext
from bihmf.models.model import ProteinModel, build_model, reads_esm
from bihmf.tasks import graph_regression
from bihmf.batching import collate, protein_graph, residue_budget_batches, residue_mask
from bihmf.gpu import pick_device
from bihmf.run import RunSpec

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.json"
SUMMARY_FILE = "summary.json"
PREDICTIONS_STEM = "predictions"
TABLE_FORMATS = ("csv", "parquet")
# the workflow's layout (rules/common.smk): results/runs/<dataset>/<encoder>/<fusion>/seed<k>, resources/esm/<name>
RUN_LAYOUT = ("results", "runs")
CHECKPOINT_DIR = ("resources", "esm")
STRUCTURE_NAME = re.compile(r"\.(pdb\d*|ent|cif|mmcif)(\.gz)?$", re.IGNORECASE)
BACKBONE = [ATOM_NAMES.index(name) for name in ("N", "CA", "C")]
# cache metadata that changes the embedding values; new chains are embedded with the run's
CACHE_SETTINGS = ("embed_dim", "esm_depth", "window", "window_overlap")
# per-residue plot: width grows with the protein, within readable bounds
PLOT_INCHES_PER_RESIDUE = 0.02
PLOT_WIDTH_RANGE = (6.0, 30.0)
PLOT_HEIGHT = 3.2
PLOT_TICKS = 12


class RunError(Exception):
    """The run cannot be used as asked: nothing is predicted (deliberately not a ValueError,
    so that the per-file handler never mistakes it for one file's bad input)."""


class InputError(ValueError):
    """One input file cannot be predicted; the other files go on."""


def esm_default(key: str) -> Any:
    """A default of the config schema's ``esm`` section (one place for defaults: the schema)."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    return schema["properties"]["esm"]["properties"][key]["default"]


@dataclass(frozen=True)
class PredictOptions:
    """What the user chooses; everything about the model comes from the run."""

    chains: tuple[str, ...] | None = None  # None: every protein chain
    per_chain: bool = False  # one protein per chain instead of one per file
    model_index: int = 0  # 0-based model of multi-model files
    ligands: tuple[Path, ...] = ()  # one for every file, or one per file in order
    pocket_cutoff: float | None = None  # Å; needed by runs on pocket graphs
    table_format: str = "csv"
    structures: bool = True  # B-factor copies and plots for per-residue tasks
    esm_checkpoint: Path | None = None  # default: the workflow's resources/esm/<name>
    cache: Path | None = None  # default: the cache the run was trained on
    token_budget: int = field(default_factory=lambda: esm_default("token_budget"))
    device: str = "auto"


@dataclass(frozen=True)
class TrainedRun:
    """A finished training run as saved by :func:`bihmf.training.train_run`."""

    path: Path
    spec: RunSpec
    model_cfg: dict[str, Any]
    provenance: dict[str, Any]
    state_dict: dict[str, Tensor]

    @property
    def esm(self) -> dict[str, str]:
        return self.provenance["esm_cache"]

    @property
    def esm_layers(self) -> list[int]:
        return json.loads(self.esm["layers"])

    @property
    def context(self) -> FusionContext:
        return FusionContext(
            esm_dim=int(self.esm["embed_dim"]),
            cache_layers=tuple(self.esm_layers),
            esm_depth=int(self.esm["esm_depth"]),
            explicit_layers=self.model_cfg["esm_layers"],
        )

    @property
    def reads_esm(self) -> bool:
        return reads_esm(self.spec.fusion, self.context, self.model_cfg["num_layers"])

    @property
    def uses_ligand(self) -> bool:
        return bool(self.provenance["ligand_atoms"])


REQUIRED_PROVENANCE = ("esm_cache", "ligand_atoms", "esm_checkpoint_sha256", "packages", "train_config")


def load_run(run_dir: Path) -> TrainedRun:
    """Read a run folder; a missing file, an old format or a version mismatch is a RunError."""
    for name in (MODEL_FILE, METRICS_FILE):
        if not (run_dir / name).is_file():
            raise RunError(f"{run_dir}: no {name}; give a finished run folder results/runs/<dataset>/<encoder>/<fusion>/seed<k>")
    try:
        metrics = json.loads((run_dir / METRICS_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise RunError(f"{run_dir / METRICS_FILE}: not valid JSON ({exc})") from exc
    provenance = metrics.get("provenance", {})
    missing = [key for key in REQUIRED_PROVENANCE if key not in provenance]
    if missing:
        raise RunError(f"{run_dir / METRICS_FILE}: provenance lacks {missing} (written by an older bihmf); retrain the run")
    saved = torch.load(run_dir / MODEL_FILE, map_location="cpu", weights_only=True)
    spec = RunSpec(**saved["spec"])
    differing = [key for key in ("dataset", "encoder", "fusion", "seed", "task") if metrics.get(key) != getattr(spec, key)]
    if differing:
        raise RunError(f"{run_dir}: {MODEL_FILE} and {METRICS_FILE} disagree on {differing}; they belong to different runs")
    check_version(provenance["packages"].get("bihmf", "unknown"), installed_version(), run_dir)
    return TrainedRun(run_dir, spec, saved["model_config"], provenance, saved["state_dict"])


def installed_version() -> str:
    try:
        return version("bihmf")
    except PackageNotFoundError:
        return "not installed"


def release_series(text: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_version(trained: str, installed: str, run_dir: Path) -> None:
    """Same major version, and the same minor one while the major is 0 (where minors may break)."""
    old, new = release_series(trained), release_series(installed)
    if old is None or new is None:
        log.warning("%s: cannot compare bihmf versions (run: %s, installed: %s)", run_dir, trained, installed)
        return
    if old[0] != new[0] or (old[0] == 0 and old[1] != new[1]):
        raise RunError(
            f"{run_dir}: trained with bihmf {trained}, installed is {installed}; the model code may differ. "
            f"Install bihmf {old[0]}.{old[1]}.x or retrain the run"
        )


def build_trained_model(run: TrainedRun, device: torch.device) -> ProteinModel:
    """The run's model with its best-epoch weights, in eval mode."""
    model = build_model(run.spec.encoder, run.spec.fusion, run.spec.task, run.model_cfg, run.context, run.spec.task_options)
    try:
        model.load_state_dict(run.state_dict)
    except RuntimeError as exc:
        raise RunError(f"{run.path / MODEL_FILE}: the weights do not fit the model this bihmf builds from the run's config: {exc}") from exc
    return model.to(device).eval()


def workflow_root(run_dir: Path) -> Path | None:
    """The workflow folder of a run under results/runs/<dataset>/<encoder>/<fusion>/seed<k>, if it is one."""
    parts = run_dir.resolve().parts
    if len(parts) > 6 and parts[-6:-4] == RUN_LAYOUT and parts[-1].startswith("seed"):
        return Path(*parts[:-6])
    return None


def verified_checkpoint(run: TrainedRun, given: Path | None) -> Path | None:
    """The ESM checkpoint to embed new chains with, its sha256 checked against the run's.

    Without ``given``, the workflow's ``resources/esm/<name>`` is used when it exists; None when
    there is none (then only chains already in the cache can be predicted).
    """
    root = workflow_root(run.path)
    path = given or (root.joinpath(*CHECKPOINT_DIR, run.esm["checkpoint"]) if root else None)
    if path is None or not path.exists():
        if given is not None:
            raise RunError(f"{given}: ESM checkpoint not found")
        return None
    if not regression_path(path).exists():
        raise RunError(f"{path}: fair-esm needs {regression_path(path).name} beside the checkpoint")
    digest = file_digest(path, "sha256")
    if digest != run.provenance["esm_checkpoint_sha256"]:
        raise RunError(
            f"{path}: sha256 {digest} differs from the checkpoint the run was trained with "
            f"({run.esm['checkpoint']}, sha256 {run.provenance['esm_checkpoint_sha256']})"
        )
    return path


def open_run_cache(run: TrainedRun, given: Path | None) -> tuple[EmbeddingCache, list[int]] | None:
    """The embedding cache to reuse and the slots of the run's layers in it; None if there is none."""
    path = given or (run.path / run.esm["index"])
    if not path.exists():
        if given is not None:
            raise RunError(f"{given}: embedding cache index not found")
        log.info("%s: the run's embedding cache is not there; every chain is embedded anew", path)
        return None
    try:
        cache = EmbeddingCache(path, checkpoint_sha256=run.provenance["esm_checkpoint_sha256"])
    except ValueError as exc:
        raise RunError(str(exc)) from exc
    missing = [layer for layer in run.esm_layers if layer not in cache.layers]
    if missing:
        raise RunError(f"{path}: lacks ESM layer(s) {missing} that the run's model reads (cached: {cache.layers})")
    differing = [key for key in CACHE_SETTINGS if cache.metadata[key] != run.esm[key]]
    if differing:
        raise RunError(f"{path}: {differing} differ from the cache the run was trained on; its embeddings are not the run's")
    return cache, [cache.layers.index(layer) for layer in run.esm_layers]


class ChainEmbeddings:
    """ESM rows per chain, in the run's layer order: from the run's cache where the sequence hash
    is there, otherwise computed with the run's checkpoint (loaded on first need)."""

    def __init__(self, run: TrainedRun, options: PredictOptions, device: torch.device):
        self.run = run
        self.device = device
        self.token_budget = options.token_budget
        self.cache = open_run_cache(run, options.cache)
        self.checkpoint = verified_checkpoint(run, options.esm_checkpoint)
        self._esm: tuple[Any, Any] | None = None

    def proteins(self, records: list[ProteinRecord]) -> tuple[list[np.ndarray], int, int]:
        """Embeddings [N, layers, D] per record, plus how many distinct chains came from the cache / were computed."""
        chains = {key: seq for record in records for key, seq in chain_sequences(record.sequence, record.chain_ids)}
        found: dict[str, np.ndarray] = {}
        if self.cache is not None:
            cache, slots = self.cache
            found = {key: cache[key][:, slots] for key in chains if key in cache}
        missing = {key: seq for key, seq in chains.items() if key not in found}
        if missing:
            found.update(self._compute(missing))
        per_record = [
            np.concatenate([found[key] for key, _ in chain_sequences(record.sequence, record.chain_ids)]) for record in records
        ]
        return per_record, len(chains) - len(missing), len(missing)

    def _compute(self, sequences: dict[str, str]) -> dict[str, np.ndarray]:
        if self.checkpoint is None:
            raise InputError(
                f"{len(sequences)} chain(s) are not in the run's embedding cache and no ESM checkpoint is at hand "
                f"to embed them; pass --esm-checkpoint (sha256 {self.run.provenance['esm_checkpoint_sha256']})"
            )
        if self._esm is None:
            self._esm = load_esm(self.checkpoint)
        model, alphabet = self._esm
        embedded = embed_sequences(
            model, alphabet, sequences, self.run.esm_layers, token_budget=self.token_budget,
            window=int(self.run.esm["window"]), overlap=int(self.run.esm["window_overlap"]), device=self.device,
        )
        return {key: values.astype(np.float32) for key, values in embedded.items()}


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files as given, folders replaced by their structure files (sorted; nested folders included)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and STRUCTURE_NAME.search(p.name)))
        else:
            files.append(path)
    return files


def output_names(files: list[Path]) -> list[str]:
    """A distinct output name per file: its name without structure suffixes, numbered on collision."""
    names: list[str] = []
    for path in files:
        base = STRUCTURE_NAME.sub("", path.name) or path.name
        name, copy = base, 1
        while name in names:
            copy += 1
            name = f"{base}-{copy}"
        names.append(name)
    return names


def pair_ligands(files: list[Path], run: TrainedRun, options: PredictOptions) -> list[Path | None]:
    """The ligand file of each structure file; the run decides whether there must be one."""
    given = list(options.ligands)
    if run.uses_ligand and not given:
        raise RunError(f"{run.path}: the model was trained on protein-ligand complexes; give the ligand (--ligand, SDF/MOL2/PDB)")
    if given and not run.uses_ligand:
        raise RunError(f"{run.path}: the model was trained without ligands; drop --ligand")
    if run.spec.graph_residues == "pocket" and options.pocket_cutoff is None:
        raise RunError(f"{run.path}: the model reads the ligand pocket only; give --pocket-cutoff (Å) as its training pockets were defined")
    if not given:
        return [None] * len(files)
    if len(given) == 1:
        return given * len(files)
    if len(given) != len(files):
        raise RunError(f"{len(given)} ligand files for {len(files)} structure files; give one for all or one per file")
    return given


def _chain_problem(chain: ChainResidues) -> str | None:
    """Why a chain cannot be a protein chain, or None."""
    if not len(chain):
        return f"chain {chain.chain}: {chain.residues_without_ca} amino-acid residues, none with a CA atom (missing backbone atoms)"
    if set(chain.sequence) == {"X"}:
        return f"chain {chain.chain}: only unknown residues (X)"
    return None


def protein_chains(path: Path, options: PredictOptions) -> list[ChainResidues]:
    """The chains to predict: the selection, or every chain that is a protein chain."""
    found = read_chains(path, options.model_index)
    if options.chains:
        absent = [c for c in options.chains if c not in found]
        if absent:
            raise InputError(f"{path}: chain(s) {absent} not found among its amino-acid chains {sorted(found)}")
        chosen = [found[c] for c in options.chains]
        problems = [p for p in map(_chain_problem, chosen) if p]
        if problems:
            raise InputError(f"{path}: {'; '.join(problems)}")
        return chosen
    if not found:
        raise InputError(f"{path}: no protein chain (no amino-acid residue; only hetero groups or waters)")
    chosen = [chain for chain in found.values() if _chain_problem(chain) is None]
    if not chosen:
        raise InputError(f"{path}: no protein chain: {'; '.join(map(_chain_problem, found.values()))}")
    return chosen


def protein_record(name: str, pdb_id: str, chains: list[ChainResidues]) -> ProteinRecord:
    """Chains as one unlabelled protein in the training schema."""
    coords = np.concatenate([c.coords for c in chains])
    n = len(coords)
    return ProteinRecord(
        protein_id=name,
        pdb_id=pdb_id,
        split="predict",
        subset="",
        sequence="".join(c.sequence for c in chains),
        chain_ids=tuple(c.chain for c in chains for _ in range(len(c))),
        resnums=np.concatenate([c.resnums for c in chains]).astype(np.int32),
        icodes=tuple(code for c in chains for code in c.icodes),
        coords=coords,
        labels=np.full(n, -1, dtype=np.int8),
        weight=1.0,
    )


def file_records(path: Path, name: str, options: PredictOptions) -> list[ProteinRecord]:
    """One record per file, or one per chain with ``per_chain``."""
    chains = protein_chains(path, options)
    groups = [[chain] for chain in chains] if options.per_chain else [chains]
    for group in groups:
        if not any(np.isfinite(c.coords[:, BACKBONE]).all(axis=(1, 2)).any() for c in group):
            raise InputError(f"{path}: missing backbone atoms: no residue of chain(s) {[c.chain for c in group]} has N, CA and C")
    return [
        protein_record(f"{name}_{group[0].chain}" if options.per_chain else name, name, group) for group in groups
    ]


def _residue_key(residue: Any) -> tuple[str, int, str]:
    return residue.get_parent().id, int(residue.id[1]), residue.id[2].strip()


def pocket_residues(path: Path, ligand: Ligand, cutoff: float, model_index: int) -> set[tuple[str, int, str]]:
    """(chain, number, insertion code) of the residues with any heavy atom within ``cutoff`` Å of any ligand heavy atom."""
    model = list(load_structure(path))[model_index]
    near_ligand = cKDTree(ligand.xyz)
    near = set()
    for residue in model.get_residues():
        # the atoms read_chains reads too: per atom the altloc of highest occupancy
        heavy = [atom.coord for atom in residue if atom.element.strip().upper() not in HYDROGENS]
        if heavy and np.isfinite(near_ligand.query(np.asarray(heavy), distance_upper_bound=cutoff)[0]).any():
            near.add(_residue_key(residue))
    return near


def pocket_mask(path: Path, record: ProteinRecord, near: set[tuple[str, int, str]], cutoff: float) -> np.ndarray:
    """The record's pocket residues; a protein with none (ligand elsewhere) cannot be predicted."""
    mask = np.array([key in near for key in zip(record.chain_ids, record.resnums.tolist(), record.icodes)])
    if not mask.any():
        raise InputError(
            f"{path}: no residue of {record.protein_id} lies within {cutoff:g} Å of the ligand; "
            "is the ligand in the structure's coordinate frame?"
        )
    return mask


def with_ligand(record: ProteinRecord, ligand: Ligand, pocket: np.ndarray | None) -> ProteinRecord:
    """The record with ligand atoms, and the pocket marked in ``labels`` as the LBA parser does."""
    labels = pocket.astype(np.int8) if pocket is not None else record.labels
    return dataclasses.replace(record, ligand_elems=ligand.elements, ligand_xyz=ligand.xyz, labels=labels)


def residue_scores(output: Tensor, batch: Any, head: Any) -> list[np.ndarray]:
    """Per-residue binding/epitope probabilities, one array per protein."""
    scores = torch.sigmoid(output.float()).cpu().numpy()
    return np.split(scores, batch.ptr[1:-1].cpu().numpy())


def class_probabilities(output: Tensor, batch: Any, head: Any) -> list[np.ndarray]:
    """Class probabilities, one row per protein."""
    return list(torch.softmax(output.float(), dim=-1).cpu().numpy())


def regression_values(output: Tensor, batch: Any, head: Any) -> list[float]:
    """Values in the target's units (the head's training standardisation undone by the task)."""
    return graph_regression.predictions(output, batch, head)["pred"].tolist()


TASK_OUTPUTS: dict[str, Callable[[Tensor, Any, Any], list[Any]]] = {
    "residue_binary": residue_scores,
    "graph_classification": class_probabilities,
    "graph_regression": regression_values,
}


def run_model(model: ProteinModel, task: str, graphs: list[Any], budget: int, device: torch.device) -> list[Any]:
    """Model outputs per graph; batches as in training, a protein above the budget on its own."""
    sizes = [g.num_nodes for g in graphs]
    outputs: list[Any] = []
    with torch.no_grad():
        for ids in residue_budget_batches(sizes, [str(i) for i in range(len(graphs))], max(budget, *sizes), np.arange(len(graphs))):
            batch = collate([graphs[i] for i in ids], device)
            outputs.extend(TASK_OUTPUTS[task](model(batch), batch, model.head))
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
    outputs: list[str] = field(default_factory=list)


def residue_rows(source: str, record: ProteinRecord, keep: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
    """One table row per scored residue."""
    positions = np.flatnonzero(keep)
    return [
        {
            "file": source,
            "protein_id": record.protein_id,
            "chain": record.chain_ids[i],
            "resnum": int(record.resnums[i]),
            "icode": record.icodes[i],
            "residue": record.sequence[i],
            "score": float(score),
        }
        for i, score in zip(positions, scores, strict=True)
    ]


def protein_row(source: str, record: ProteinRecord, keep: np.ndarray, value: Any, ligand: Path | None) -> dict[str, Any]:
    """One table row per protein: its prediction, and what it was made from."""
    row: dict[str, Any] = {
        "file": source,
        "protein_id": record.protein_id,
        "chains": ",".join(dict.fromkeys(record.chain_ids)),
        "residues": len(record.sequence),
        "graph_residues": int(keep.sum()),
    }
    if ligand is not None:
        row.update(ligand=str(ligand), ligand_atoms=len(record.ligand_elems))
    if isinstance(value, np.ndarray):
        row.update(predicted_class=int(value.argmax()), probability=float(value.max()))
        row.update({f"p_{k}": float(p) for k, p in enumerate(value)})
    else:
        row["prediction"] = float(value)
    return row


class _ScoredResidues(Select):
    """Keeps the model's selected model and the residues that got a score (waters never)."""

    def __init__(self, model_id: Any, keys: set[tuple[str, int, str]]):
        self.model_id = model_id
        self.keys = keys

    def accept_model(self, model: Any) -> bool:
        return model.id == self.model_id

    def accept_residue(self, residue: Any) -> bool:
        polymer_or_amino_acid = residue.id[0] == " " or one_letter(residue.get_resname()) is not None
        return residue.id[0] != "W" and polymer_or_amino_acid and _residue_key(residue) in self.keys


def write_bfactor_copy(path: Path, model_index: int, scores: dict[tuple[str, int, str], float], out: Path) -> None:
    """A copy of the scored residues of ``path`` with each atom's B-factor set to its residue's score.

    mmCIF stays mmCIF (long chain ids of assemblies do not fit PDB columns), PDB stays PDB.
    """
    structure = load_structure(path)
    model = list(structure)[model_index]
    for residue in model.get_residues():
        key = _residue_key(residue)
        if key in scores:
            for atom in residue.get_unpacked_list():
                atom.set_bfactor(scores[key])
    writer = MMCIFIO() if is_mmcif(path) else PDBIO()
    writer.set_structure(structure)
    with atomic_output(out) as tmp:
        writer.save(str(tmp), select=_ScoredResidues(model.id, set(scores)))


def plot_scores(title: str, label: str, rows: list[dict[str, Any]], out: Path) -> None:
    """Per-residue score along the sequence, one line per chain, residue numbers on the axis."""
    frame = pd.DataFrame(rows)
    position = np.arange(1, len(frame) + 1)
    low, high = PLOT_WIDTH_RANGE
    fig = Figure(figsize=(min(high, max(low, len(frame) * PLOT_INCHES_PER_RESIDUE)), PLOT_HEIGHT))
    ax = fig.subplots()
    for chain, part in frame.groupby("chain", sort=False):
        ax.plot(position[part.index], part["score"], linewidth=1, label=f"chain {chain}")
    step = max(1, math.ceil(len(frame) / PLOT_TICKS))
    ticks = position[::step]
    ax.set_xticks(ticks, [f"{frame.chain[i - 1]}{frame.resnum[i - 1]}{frame.icode[i - 1]}" for i in ticks], fontsize="small")
    ax.set_xlim(0.5, len(frame) + 0.5)
    ax.set_ylim(0, 1)
    ax.set_xlabel("residue (chain, number) along the sequence")
    ax.set_ylabel(label)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    with atomic_output(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def write_table(rows: list[dict[str, Any]], out: Path, table_format: str) -> None:
    frame = pd.DataFrame(rows)
    with atomic_output(out) as tmp:
        if table_format == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)


@dataclass
class Predictor:
    """Everything loaded once for all files: the run, its model, the embedding source."""

    run: TrainedRun
    options: PredictOptions
    device: torch.device
    model: ProteinModel
    embeddings: ChainEmbeddings | None

    def file_rows(self, path: Path, name: str, ligand_path: Path | None, outcome: FileOutcome) -> list[dict[str, Any]]:
        """Table rows of one file (InputError and other ValueErrors name the file's problem)."""
        records = file_records(path, name, self.options)
        if ligand_path is not None:
            ligand = read_ligand(ligand_path)
            cutoff = self.options.pocket_cutoff
            if self.run.spec.graph_residues == "pocket":
                near = pocket_residues(path, ligand, cutoff, self.options.model_index)
                records = [with_ligand(r, ligand, pocket_mask(path, r, near, cutoff)) for r in records]
            else:
                records = [with_ligand(r, ligand, None) for r in records]
        esm: list[np.ndarray | None] = [None] * len(records)
        if self.embeddings is not None:
            esm, outcome.chains_from_cache, outcome.chains_embedded = self.embeddings.proteins(records)
        keeps = [residue_mask(r, self.run.spec.graph_residues) for r in records]
        graphs = [protein_graph(r, e, self.run.spec.graph_residues) for r, e in zip(records, esm, strict=True)]
        budget = self.run.provenance["train_config"]["residue_budget"]
        values = run_model(self.model, self.run.spec.task, graphs, budget, self.device)
        outcome.proteins, outcome.residues = len(records), sum(len(r.sequence) for r in records)
        if self.run.spec.task == "residue_binary":
            return [row for r, k, v in zip(records, keeps, values, strict=True) for row in residue_rows(str(path), r, k, v)]
        return [protein_row(str(path), r, k, v, ligand_path) for r, k, v in zip(records, keeps, values, strict=True)]

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


def make_predictor(run: TrainedRun, options: PredictOptions) -> Predictor:
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
    rows: list[dict[str, Any]] = []
    outcomes = []
    table = out_dir / f"{PREDICTIONS_STEM}.{options.table_format}"
    per_residue = run.spec.task == "residue_binary"
    for path, name, ligand in zip(files, output_names(files), ligands, strict=True):
        outcome = FileOutcome(str(path), name)
        outcomes.append(outcome)
        try:
            if not path.is_file():
                raise InputError(f"{path}: no such file")
            file_rows = predictor.file_rows(path, name, ligand, outcome)
            extras = predictor.residue_extras(path, name, file_rows, out_dir) if per_residue and options.structures else []
        except (ValueError, OSError) as exc:
            outcome.error = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            log.warning("%s", outcome.error)
            continue
        rows.extend(file_rows)
        outcome.status = "ok"
        outcome.outputs = [str(table), *map(str, extras)]
    if rows:
        write_table(rows, table, options.table_format)
    else:  # no stale table from an earlier call may pass for this one's
        table.unlink(missing_ok=True)
    summary = {
        "run": str(run_dir),
        **{key: getattr(run.spec, key) for key in ("dataset", "encoder", "fusion", "seed", "task")},
        "predictions": str(table) if rows else None,
        "succeeded": sum(o.status == "ok" for o in outcomes),
        "failed": sum(o.status != "ok" for o in outcomes),
        "files": [dataclasses.asdict(o) for o in outcomes],
    }
    write_json_atomic(out_dir / SUMMARY_FILE, summary)
    return summary
