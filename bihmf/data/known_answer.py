"""Known-answer dataset: real backbones carrying random sequences, with planted answers.

Built once by :func:`build` (``python -m bihmf.known_answer build``) from real PDB structures
(the demo's), read by :func:`parse` like any dataset. Sequence and structure are independent:
every protein is a contiguous fragment of a real chain whose residues get a seeded random
sequence. Two kinds of per-residue bits are planted:

- ``g`` (geometric): the residue's CA has more CA neighbours within ``radius`` Å in its
  fragment than the fragment's median, a function of the backbone alone;
- ``b`` and ``b_early`` (sequence-side): random bits, visible only in the embeddings :func:`build`
  writes (HDF5, one dataset per protein, [n_layers, L, D]; imported through
  ``esm.precomputed``): Gaussian rows plus ``signal`` times +-1 along one random direction per
  bit, in that bit's layers only (``b`` in the last layer, ``b_early`` in an early one).

Label files (``labels/<task>.json``, one per task, protein id -> a 0/1 string or a number):
``g``, ``b``, ``xor`` (g XOR b), ``b_early`` and ``mix`` (protein-level:
z(mean b) + z(mean neighbour count) over all proteins). Raw layout::

    known_answer/proteins.json                  [{protein_id, split, source: {file, chain, start, end}}]
    known_answer/structures/<protein_id>.pdb    the fragment's real N, CA, C, O, CB atoms, chain A,
                                                residues renamed to the random sequence
    known_answer/planting.json                  the settings it was built with (Planting)
    known_answer/labels/<task>.json

Roles read (``paths``): ``labels`` = the label file of this dataset's task, inside the raw folder.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bihmf.data.schema import EntryReport, ProteinRecord
from bihmf.data.structure import ATOM_NAMES, ChainResidues, read_chains
from bihmf.io import atomic_output

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
THREE_LETTER = dict(zip(AMINO_ACIDS, ("ALA CYS ASP GLU PHE GLY HIS ILE LYS LEU MET ASN PRO GLN ARG SER THR VAL TRP TYR").split(), strict=True))
PROTEINS_FILE = "known_answer/proteins.json"
SPLITS = (("train", 0.6), ("val", 0.2), ("test", 0.2))
TASKS = ("g", "b", "xor", "b_early", "mix")


@dataclass(frozen=True)
class Planting:
    """What :func:`build` plants; recorded in the archive as ``known_answer/planting.json``."""

    seed: int = 0
    fragment: int = 50  # residues per protein
    radius: float = 10.0  # Å, the CA neighbourhood of g
    n_layers: int = 4
    width: int = 16
    signal: float = 1.5  # offset along the bit's direction, in units of the noise's s.d.
    layers: dict[str, list[int]] = field(default_factory=lambda: {"b": [4], "b_early": [2]})


def structure_ids(raw_dir: Path, spec: dict[str, Any]) -> list[str]:
    return []  # the structures ship in the archive


def neighbour_counts(ca: np.ndarray, radius: float) -> np.ndarray:
    """Other CAs within ``radius`` of each CA."""
    distance = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
    return (distance < radius).sum(axis=1) - 1


def _fragments(structures: list[Path], length: int) -> list[tuple[Path, ChainResidues, int]]:
    """Non-overlapping fragments of ``length`` residues of every distinct protein chain
    (a chain whose sequence repeats one of the same file is a copy and is skipped)."""
    out = []
    for path in structures:
        seen = set()
        for chain in read_chains(path).values():
            if chain.protein_problem() is not None or chain.sequence in seen:
                continue
            seen.add(chain.sequence)
            out += [(path, chain, start) for start in range(0, len(chain) - length + 1, length)]
    return out


def fragment_pdb(chain: ChainResidues, start: int, sequence: str) -> str:
    """PDB text of one fragment: its real backbone (and CB, except where the new residue is a
    glycine), chain A, residues numbered from 1 and named after ``sequence``."""
    lines, serial = [], 0
    for number, letter in enumerate(sequence, start=1):
        residue = chain.coords[start + number - 1]
        for atom, xyz in zip(ATOM_NAMES, residue, strict=True):
            if np.isnan(xyz).any() or (atom == "CB" and letter == "G"):
                continue
            serial += 1
            lines.append(f"ATOM  {serial:5d}  {atom:<3s} {THREE_LETTER[letter]} A{number:4d}    "
                         f"{xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}  1.00  0.00           {atom[0]}")
    return "\n".join([*lines, "TER", "END", ""])


def build(structures: list[Path], out_dir: Path, planting: Planting) -> tuple[Path, Path]:
    """The dataset archive and the embeddings it plants: ``known_answer.tar.gz``, ``embeddings.h5``."""
    import h5py

    rng = np.random.default_rng(planting.seed)
    fragments = _fragments(sorted(structures), planting.fragment)
    order = rng.permutation(len(fragments))
    bounds = np.cumsum([round(share * len(fragments)) for _, share in SPLITS])
    directions = {bit: (lambda v: v / np.linalg.norm(v))(rng.normal(size=planting.width)) for bit in planting.layers}
    entries, bits, counts, arrays, pdb_files = [], {"g": {}, "b": {}, "b_early": {}}, {}, {}, {}
    for position, index in enumerate(order):
        path, chain, start = fragments[index]
        protein_id = f"{path.name.split('.')[0]}_{chain.chain}_{start}"
        split = next(name for (name, _), bound in zip(SPLITS, bounds, strict=True) if position < bound)
        sequence = "".join(rng.choice(list(AMINO_ACIDS), planting.fragment))
        ca = chain.coords[start : start + planting.fragment, ATOM_NAMES.index("CA")]
        counts[protein_id] = neighbour_counts(ca, planting.radius)
        bits["g"][protein_id] = (counts[protein_id] > np.median(counts[protein_id])).astype(int)
        bits["b"][protein_id] = (rng.random(planting.fragment) < rng.uniform(0.25, 0.75)).astype(int)
        bits["b_early"][protein_id] = rng.integers(0, 2, planting.fragment)
        stacked = rng.normal(size=(planting.n_layers, planting.fragment, planting.width))
        for bit, layers in planting.layers.items():
            for layer in layers:
                stacked[layer - 1] += planting.signal * (2 * bits[bit][protein_id][:, None] - 1) * directions[bit]
        arrays[protein_id] = stacked.astype(np.float32)
        pdb_files[protein_id] = fragment_pdb(chain, start, sequence)
        entries.append({"protein_id": protein_id, "split": split,
                        "source": {"file": path.name, "chain": chain.chain, "start": start, "end": start + planting.fragment}})
    labels = {task: {pid: "".join(map(str, bits[task][pid])) for pid in arrays} for task in ("g", "b", "b_early")}
    labels["xor"] = {pid: "".join(map(str, bits["g"][pid] ^ bits["b"][pid])) for pid in arrays}
    mean_b = np.array([bits["b"][pid].mean() for pid in arrays])
    mean_count = np.array([counts[pid].mean() for pid in arrays])
    mix = (mean_b - mean_b.mean()) / mean_b.std() + (mean_count - mean_count.mean()) / mean_count.std()
    labels["mix"] = {pid: float(value) for pid, value in zip(arrays, mix, strict=True)}

    stage = out_dir / "known_answer.staging"
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "known_answer" / "structures").mkdir(parents=True)
    (stage / "known_answer" / "labels").mkdir()
    for protein_id, text in pdb_files.items():
        (stage / "known_answer" / "structures" / f"{protein_id}.pdb").write_text(text)
    (stage / PROTEINS_FILE).write_text(json.dumps(entries, indent=1))
    (stage / "known_answer" / "planting.json").write_text(json.dumps(asdict(planting), indent=1))
    for task, values in labels.items():
        (stage / "known_answer" / "labels" / f"{task}.json").write_text(json.dumps(values))
    archive, embeddings = out_dir / "known_answer.tar.gz", out_dir / "embeddings.h5"
    with atomic_output(archive) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for member in sorted((stage / "known_answer").rglob("*")):
            info = tar.gettarinfo(member, str(member.relative_to(stage)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if member.is_file():
                with member.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    shutil.rmtree(stage)
    with atomic_output(embeddings) as tmp, h5py.File(tmp, "w") as handle:
        for protein_id, stacked in arrays.items():
            handle.create_dataset(protein_id, data=stacked)
    return archive, embeddings


def parse(raw_dir: Path, spec: dict[str, Any]) -> tuple[list[ProteinRecord], list[EntryReport]]:
    """Records of the fragments in ``proteins.json`` with the labels of ``paths.labels``."""
    if "labels" not in spec["paths"]:
        raise ValueError(f"{raw_dir}: a known_answer dataset needs paths.labels (known_answer/labels/<task>.json)")
    labels_path = raw_dir / spec["paths"]["labels"]
    labels = json.loads(labels_path.read_text())
    records, reports = [], []
    for entry in json.loads((raw_dir / PROTEINS_FILE).read_text()):
        protein_id = entry["protein_id"]
        chain = read_chains(raw_dir / "known_answer" / "structures" / f"{protein_id}.pdb")["A"]
        if protein_id not in labels:
            raise ValueError(f"{labels_path}: no label for protein {protein_id}")
        label, n = labels[protein_id], len(chain)
        per_residue = isinstance(label, str)
        if per_residue and len(label) != n:
            raise ValueError(f"{labels_path}: protein {protein_id} has {len(label)} labels for {n} residues")
        records.append(ProteinRecord(
            protein_id=protein_id, pdb_id=entry["source"]["file"][:4].lower(), split=entry["split"], subset="",
            sequence=chain.sequence, chain_ids=("A",) * n, resnums=chain.resnums, icodes=chain.icodes, coords=chain.coords,
            labels=np.array([int(c) for c in label], np.int8) if per_residue else np.full(n, -1, np.int8),
            weight=1.0, target=float("nan") if per_residue else float(label),
        ))
        reports.append(EntryReport(protein_id, entry["split"], structure_residues=n, matched=n))
    return records, reports
