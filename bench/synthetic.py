"""Synthetic proteins drawn to each benchmark dataset's published size and length distribution.

The scale rehearsal (``bench.rehearsal``) needs the datasets at their real counts without
downloading them. Counts per split are the published ones; where they come from:

- react: IEConv's ProtFunct split files, 29,215 / 2,562 / 5,651 chains (counted in the files).
- psr: ATOM3D PSR split by year, 25,400 / 2,800 / 16,014 decoys (ATOM3D dataset card). ATOM3D
  describes about 700 CASP targets for these 44,214 decoys, so decoys come in groups of 63
  sharing one sequence (the ESM cache holds one row per target).
- lba30: ATOM3D LBA at 30 % sequence identity, 3,507 / 466 / 490 complexes (dataset card).
- lba60: the released ATOM3D LBA 60 % LMDBs, 3,563 train and 452 test complexes (atom3d issue
  #54); validation is the rest of the 4,463 complexes, 448.
- ppbs: ScanNet PPBS validation and test subsets as counted in the label files (414 / 1,458 /
  590 / 754 and 554 / 1,488 / 915 / 1,079 chains); train is ScanNet's "about 20k chains" less
  those 7,252, about 12,700.
- bce: ScanNet BCE folds of 990 / 580 / 760 / 927 / 499 antigens, folds 1-3 train, 4 val, 5 test
  as config.yaml splits them.

Lengths: BCE's ``table.csv`` lists every antigen's length and chains, so BCE uses the real ones,
fold by fold. PPBS validation chains take the real lengths of the four validation label files
(residue lines per chain); every other PPBS chain, and the chains of react, psr and lba (for
which no length table is at hand), draw from those 3,216 real PDB chain lengths. LBA complexes
are one chain each; the pocket (the graph's residues) and ligand sizes are our assumption, as
no statistic for them is at hand: ``POCKET_RESIDUES`` residues and ``LIGAND_ATOMS`` heavy atoms.
Residue labels are positive at the rate the label files show (PPBS about 20 %, BCE about 12 %).
Coordinates are a random walk of 3.8 Å CA steps with backbone atoms placed around each CA:
valid input for every encoder, not a fold.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bihmf.data.schema import ProteinRecord

ROOT = Path(__file__).resolve().parents[1]
SCANNET = ROOT / "tests" / "data" / "scannet"
AMINO = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY", dtype="S1")
CA_STEP = 3.8  # Å between consecutive CA atoms
BACKBONE_OFFSETS = np.array([[-1.46, 0.0, 0.0], [0.0, 0.0, 0.0], [1.52, 0.0, 0.0], [2.2, 1.0, 0.0], [-0.5, -1.4, 0.3]], np.float32)
POCKET_RESIDUES = 40
LIGAND_ATOMS = 25
PSR_DECOYS_PER_TARGET = 63  # 44,214 decoys / about 700 targets


@dataclass(frozen=True)
class Part:
    """One split (and subset) of a dataset: how many proteins, and where their lengths come from."""

    split: str
    subset: str
    count: int
    lengths: str  # "ppbs_pool", "ppbs_val_<subset>" or "bce_fold<k>"


@dataclass(frozen=True)
class Shape:
    """A dataset as the rehearsal draws it."""

    name: str
    kind: str
    parts: tuple[Part, ...]
    positive_rate: float = 0.0  # per-residue label rate; 0 for protein-level tasks
    per_sequence: int = 1  # proteins sharing one sequence (PSR decoys of a target)
    ligand: bool = False  # LBA: pocket marked in labels, ligand atoms beside the protein

    @property
    def count(self) -> int:
        return sum(part.count for part in self.parts)


def _splits(train: int, val: int, test: int, lengths: str = "ppbs_pool") -> tuple[Part, ...]:
    return (Part("train", "", train, lengths), Part("val", "", val, lengths), Part("test", "", test, lengths))


PPBS_SUBSETS = {"70": (414, 554), "homology": (1458, 1488), "topology": (590, 915), "none": (754, 1079)}
SHAPES: dict[str, Shape] = {
    "react": Shape("react", "react", _splits(29215, 2562, 5651)),
    "psr": Shape("psr", "psr", _splits(25400, 2800, 16014), per_sequence=PSR_DECOYS_PER_TARGET),
    "lba30": Shape("lba30", "lba", _splits(3507, 466, 490), ligand=True),
    "lba60": Shape("lba60", "lba", _splits(3563, 448, 452), ligand=True),
    "ppbs": Shape(
        "ppbs", "ppbs",
        (Part("train", "", 12700, "ppbs_pool"),
         *(Part("val", name, val, f"ppbs_val_{name}") for name, (val, _) in PPBS_SUBSETS.items()),
         *(Part("test", name, test, "ppbs_pool") for name, (_, test) in PPBS_SUBSETS.items())),
        positive_rate=0.2,
    ),
    "bce": Shape(
        "bce", "bce",
        (*(Part("train", "", n, f"bce_fold{k}") for k, n in ((1, 990), (2, 580), (3, 760))),
         Part("val", "", 927, "bce_fold4"), Part("test", "", 499, "bce_fold5")),
        positive_rate=0.12,
    ),
}


def label_file_lengths(path: Path) -> list[int]:
    """Residues per chain of a ScanNet label file (data lines after each ``>`` header)."""
    lengths: list[int] = []
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            lengths.append(0)
        elif line.strip():
            if not lengths:
                raise ValueError(f"{path}: residue line before the first '>' header")
            lengths[-1] += 1
    return lengths


def bce_chains(table: Path) -> dict[str, list[list[int]]]:
    """Per BCE fold (``Set``), each antigen's chain lengths: the table's ``Length`` split evenly over
    the chains its ``PDB ID`` names after the underscore (``7e33_AB``: chains A and B)."""
    folds: dict[str, list[list[int]]] = {}
    with table.open(newline="") as handle:
        for row in csv.DictReader(handle):
            chains = len(row["PDB ID"].split("_", 1)[1]) if "_" in row["PDB ID"] else 1
            length = int(row["Length"])
            if length < chains:
                raise ValueError(f"{table}: {row['PDB ID']} has length {length} for {chains} chains")
            share = [length // chains + (i < length % chains) for i in range(chains)]
            folds.setdefault(row["Set"], []).append(share)
    return folds


def length_sources() -> dict[str, list[list[int]]]:
    """Chain lengths of each protein, by source name (see the module docstring)."""
    sources = {f"ppbs_val_{name}": [[n] for n in label_file_lengths(SCANNET / "PPBS" / f"labels_validation_{name}.txt")] for name in PPBS_SUBSETS}
    sources["ppbs_pool"] = [chains for name in PPBS_SUBSETS for chains in sources[f"ppbs_val_{name}"]]
    folds = bce_chains(SCANNET / "BCE" / "table.csv")
    sources.update({f"bce_fold{k}": folds[f"Fold {k}"] for k in range(1, 6)})
    return sources


def part_lengths(part: Part, count: int, sources: dict[str, list[list[int]]], rng: np.random.Generator) -> list[list[int]]:
    """``count`` proteins' chain lengths: the source itself when it lists the part's proteins
    (drawn without replacement below the full count), else drawn from the pool with replacement."""
    source = sources[part.lengths]
    if part.lengths == "ppbs_pool":
        return [source[i] for i in rng.integers(0, len(source), count)]
    if len(source) != part.count:
        raise ValueError(f"length source {part.lengths} lists {len(source)} proteins, the published count is {part.count}")
    return [source[i] for i in sorted(rng.choice(len(source), count, replace=False))]


def random_sequence(rng: np.random.Generator, length: int) -> str:
    return AMINO[rng.integers(0, len(AMINO), length)].tobytes().decode("ascii")


def backbone(rng: np.random.Generator, length: int) -> np.ndarray:
    """N, CA, C, O, CB per residue [L, 5, 3]: CA a random walk of 3.8 Å steps."""
    steps = rng.normal(size=(length, 3))
    steps *= CA_STEP / np.linalg.norm(steps, axis=1, keepdims=True)
    ca = np.cumsum(steps, axis=0).astype(np.float32)
    return ca[:, None, :] + BACKBONE_OFFSETS[None, :, :]


def protein(shape: Shape, index: int, part: Part, chains: list[int], sequence: str, group: str, rng: np.random.Generator) -> ProteinRecord:
    """One synthetic protein of ``shape`` in ``part`` with the given chain lengths, sequence and group."""
    n = sum(chains)
    chain_ids = tuple(chr(ord("A") + c) for c, length in enumerate(chains) for _ in range(length))
    resnums = np.concatenate([np.arange(1, length + 1, dtype=np.int32) for length in chains])
    coords = backbone(rng, n)
    if shape.ligand:
        labels = np.zeros(n, np.int8)
        centre = int(rng.integers(0, n))
        labels[np.argsort(np.linalg.norm(coords[:, 1] - coords[centre, 1], axis=1))[:POCKET_RESIDUES]] = 1
        ligand_xyz = coords[centre, 1] + rng.normal(scale=2.0, size=(LIGAND_ATOMS, 3)).astype(np.float32)
        ligand_elems = tuple(rng.choice(["C", "N", "O"], LIGAND_ATOMS, p=[0.7, 0.15, 0.15]))
    else:
        labels = (rng.random(n) < shape.positive_rate).astype(np.int8) if shape.positive_rate else np.full(n, -1, np.int8)
        ligand_xyz, ligand_elems = np.zeros((0, 3), np.float32), ()
    target = {"react": float(rng.integers(0, 384)), "psr": float(rng.random()), "lba": float(rng.normal(6.0, 2.0))}.get(shape.kind, math.nan)
    return ProteinRecord(
        protein_id=f"{shape.name}_{index:06d}", pdb_id=f"s{index:06d}", split=part.split, subset=part.subset, sequence=sequence,
        chain_ids=chain_ids, resnums=resnums, icodes=("",) * n, coords=coords, labels=labels, weight=1.0, target=target,
        group=group, ligand_elems=ligand_elems, ligand_xyz=ligand_xyz,
    )


def records(shape: Shape, fraction: float, seed: int = 0) -> list[ProteinRecord]:
    """``fraction`` of every part of ``shape`` (at least one protein each), in split order.

    Proteins of one sequence group (PSR decoys of a target) are consecutive and share the
    group's chain lengths and sequence.
    """
    rng = np.random.default_rng(seed)
    sources = length_sources()
    out: list[ProteinRecord] = []
    for part in shape.parts:
        count = max(1, round(part.count * fraction))
        groups = part_lengths(part, math.ceil(count / shape.per_sequence), sources, rng)
        for g, chains in enumerate(groups):
            sequence = random_sequence(rng, sum(chains))
            group = f"{part.split}{g:05d}" if shape.per_sequence > 1 else ""
            for _ in range(min(shape.per_sequence, count - g * shape.per_sequence)):
                out.append(protein(shape, len(out), part, chains, sequence, group, rng))
    return out
