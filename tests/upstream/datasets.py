"""Dataset content at the published counts, in the raw formats the parsers read, generated from a seed.

- **ScanNet (ppbs, bce)**: the real label files and table of ``tests/data/scannet/`` are served
  unchanged (their pinned checksums hold); the files not at hand are synthesised in the same
  format at the published counts: PPBS train (about 12,700 chains, ``bench.synthetic``) and the
  four test subsets with lengths drawn from the real validation chains, PPBS ``table.csv`` with
  BCE's columns, BCE folds 1, 3, 4, 5 from the real BCE table (its ids, chains and lengths, in its
  row order). Structures are not stored: an :class:`~tests.upstream.structures.Entry` per PDB id
  holds the residues its label files name, and the file is generated when asked for.
- **react**: IEConv's five text files and ``ProtFunct.zip`` (``data/<pdb>.<chain>.hdf5``, the keys
  IEConv's ``save_hdf5`` writes, built with the fixture builder's helpers on synthetic geometry).
- **psr, lba30, lba60**: ATOM3D LMDB tarballs (``tests.fixtures.atom3d_writer.write_lmdb``, the fixture
  builder's reproducible tar writer), backbone atoms only.

``fraction`` keeps the first ``round(count * fraction)`` entries of every list (at least one), so a
reduced run is a prefix of the full one. Archives are built once into ``cache_dir`` and served
from there; everything else is built in memory on first use.
"""

from __future__ import annotations

import csv
import io
import math
import string
import tempfile
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
from Bio.Data.IUPACData import protein_letters_1to3

from bench.synthetic import SCANNET, SHAPES, label_file_lengths
from bihmf.data.atom3d import ATOM_COLUMNS
from bihmf.data.scannet import parse_origin, read_label_file
from tests.fixtures.atom3d_writer import write_lmdb
from tests.fixtures.build_atom3d_fixtures import write_tarball
from tests.fixtures.build_react_fixture import AMINO_INDEX, ELEMENT_INDEX, ZIP_DATE, dense_index, hdf5_bytes, peptide_neighbours
from tests.upstream.structures import ATOMS, Entry, backbone, seed_of

AMINO = "ACDEFGHIKLMNPQRSTVWY"
POSITIVE_RATE = {"ppbs": 0.2, "bce": 0.12}
HUGE_COPIES = 59  # a huge assembly: 60 copies of its labelled chains (a virus capsid's order)
HUGE_EVERY = 2000  # one entry in this many is such an assembly (only mmCIF is served for it)
REACT_MAX_LENGTH = 1000  # ProtFunct chains are single chains; the pool's longest assemblies are left out


def keep(count: int, fraction: float) -> int:
    """How many of ``count`` entries a run at ``fraction`` serves (a prefix, at least one)."""
    return max(1, round(count * fraction))


def url_key(url: str) -> str:
    """``https://host/path?query`` -> ``host/path`` (the simulator's route key)."""
    parts = urlparse(url)
    return f"{parts.hostname}{parts.path}"


def synthetic_ids(rng: np.random.Generator, count: int, taken: set[str]) -> list[str]:
    """New 4-character PDB-like ids (digit + 3 alphanumerics) not in ``taken``; ``taken`` grows."""
    alphabet = np.array(list(string.digits + string.ascii_lowercase))
    out = []
    while len(out) < count:
        candidate = str(rng.integers(1, 10)) + "".join(rng.choice(alphabet, 3))
        if candidate not in taken:
            taken.add(candidate)
            out.append(candidate)
    return out


# --------------------------------------------------------------------------- ScanNet


def label_block(origin: str, chains: dict[str, int], rng: np.random.Generator, rate: float) -> str:
    """One entry of a label file: header, then ``<chain> <resnum> <aa> <label>`` per residue."""
    lines = [f">{origin}\n"]
    for chain, length in chains.items():
        aas = rng.integers(0, len(AMINO), length)
        labels = rng.random(length) < rate
        lines += [f"{chain} {i + 1} {AMINO[a]} {int(b)}\n" for i, (a, b) in enumerate(zip(aas, labels))]
    return "".join(lines)


def prefix_entries(text: str, count: int) -> str:
    """The first ``count`` entries (header blocks) of a label file's text."""
    blocks = text.split("\n>")
    return ("\n>".join(blocks[:count])).rstrip("\n") + "\n"


def table_rows(text: str, sets: dict[str, int]) -> str:
    """A ScanNet table keeping the first ``n`` rows of each ``Set`` (unnamed index column renumbered)."""
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    set_col, seen, out = header.index("Set"), dict.fromkeys(sets, 0), []
    for row in body:
        if row[set_col] in sets and seen[row[set_col]] < sets[row[set_col]]:
            seen[row[set_col]] += 1
            out.append([str(len(out)), *row[1:]])
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *out])
    return buffer.getvalue()


class ScanNet:
    """Label files, table and per-id structure entries of one ScanNet dataset (ppbs or bce)."""

    def __init__(self, name: str, spec: dict[str, Any], fraction: float, rng: np.random.Generator, taken: set[str]):
        self.name, self.spec = name, spec
        self.files: dict[str, str] = {}
        folder = SCANNET / name.upper()
        rate = POSITIVE_RATE[name]
        counts: dict[str, int] = {}
        real_table = folder / "table.csv"
        table_origins = self._table_origins(real_table) if real_table.exists() else {}
        for label_file in spec["label_files"]:
            file, set_name = label_file["file"], label_file["table_set"]
            real = folder / file
            if real.exists():
                full = real.read_text()
                count = keep(full.count(">"), fraction)
                self.files[file] = full if count == full.count(">") else prefix_entries(full, count)
            elif set_name in table_origins:  # BCE: ids, chains and lengths from the real table
                rows = table_origins[set_name][: keep(len(table_origins[set_name]), fraction)]
                self.files[file] = "".join(label_block(origin, chains, rng, rate) for origin, chains in rows)
            else:  # PPBS train and test: new ids, lengths from the real validation chains
                count = keep(self._published(label_file), fraction)
                pool = [n for f in sorted(folder.glob("labels_validation_*.txt")) for n in label_file_lengths(f)]
                ids = synthetic_ids(rng, count, taken)
                self.files[file] = "".join(
                    label_block(f"{pdb}_0-A", {"A": int(pool[i])}, rng, rate) for pdb, i in zip(ids, rng.integers(0, len(pool), count))
                )
            counts[set_name] = self.files[file].count(">")
        if real_table.exists() and all(count == len(table_origins[s]) for s, count in counts.items()):
            self.files["table.csv"] = real_table.read_text()
        elif real_table.exists():
            self.files["table.csv"] = table_rows(real_table.read_text(), counts)
        else:
            self.files["table.csv"] = self._table(rng)
        self.entries = self._entries()

    def _published(self, label_file: dict[str, Any]) -> int:
        """The published count of a label file's split/subset (PPBS train: bench.synthetic's count)."""
        split, subset = label_file["split"], label_file.get("subset", "")
        return sum(p.count for p in SHAPES[self.name].parts if p.split == split and p.subset == subset)

    @staticmethod
    def _table_origins(table: Path) -> dict[str, list[tuple[str, dict[str, int]]]]:
        """Per ``Set``: (origin, chain -> length) in row order; ``Length`` split evenly over the chains."""
        out: dict[str, list[tuple[str, dict[str, int]]]] = {}
        with table.open(newline="") as handle:
            for row in csv.DictReader(handle):
                _, _, chains = parse_origin(row["PDB ID"])
                length = int(row["Length"])
                share = {c: length // len(chains) + (i < length % len(chains)) for i, c in enumerate(chains)}
                out.setdefault(row["Set"], []).append((row["PDB ID"], share))
        return out

    def _table(self, rng: np.random.Generator) -> str:
        """A table with BCE's columns for the label files (rows per set in label-file order)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["", "PDB ID", "Antigen Name", "Organism", "PDB Name", "All PDB ID", "Length", "Set", "Sample weight"])
        index = 0
        for label_file in self.spec["label_files"]:
            for entry in read_label_text(self.files[label_file["file"]]):
                weight = 1.0 / int(rng.integers(1, 20))
                writer.writerow([index, entry.origin, "synthetic", "synthetic", "synthetic", entry.origin, len(entry.rows), label_file["table_set"], repr(weight)])
                index += 1
        return buffer.getvalue()

    def _entries(self) -> dict[str, Entry]:
        """One structure per PDB id: every chain any of its entries labels (first labelling wins)."""
        chains: dict[str, dict[str, tuple[tuple[int, str], ...]]] = {}
        models: dict[str, int] = {}
        for label_file in self.spec["label_files"]:
            for entry in read_label_text(self.files[label_file["file"]]):
                pdb_id, model, names = parse_origin(entry.origin)
                models[pdb_id] = max(models.get(pdb_id, 1), model + 1)
                for name in names:
                    rows = tuple((r.resnum, r.aa) for r in entry.rows if r.chain == name)
                    chains.setdefault(pdb_id, {}).setdefault(name, rows)
        return {
            pdb_id: Entry(pdb_id, tuple(by_chain.items()), models[pdb_id], HUGE_COPIES if seed_of(pdb_id) % HUGE_EVERY == 0 else 0)
            for pdb_id, by_chain in chains.items()
        }


def read_label_text(text: str):  # noqa: ANN201 (list of LabelEntry)
    """``bihmf.data.scannet.read_label_file`` on text (the parser the pipeline itself uses)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as handle:
        handle.write(text)
        handle.flush()
        return read_label_file(Path(handle.name))


# --------------------------------------------------------------------------- react (IEConv)


def ieconv_chain(pdb_chain: str, sequence: str, rng: np.random.Generator) -> bytes:
    """One ``data/<pdb>.<chain>.hdf5``: IEConv's keys on a synthetic backbone (bonds along it)."""
    names = [atom for aa in sequence for atom in ATOMS if not (aa == "G" and atom == "CB")]
    per_residue = np.array([4 if aa == "G" else 5 for aa in sequence])
    residue_of = np.repeat(np.arange(len(sequence)), per_residue)
    xyz = backbone(rng, len(sequence)).reshape(-1, 3)[[i for i, aa in enumerate(sequence) for k in range(5) if not (aa == "G" and k == 4)]]
    center = (xyz.max(0) + xyz.min(0)) * 0.5
    pos = (xyz - center)[None]
    starts = np.concatenate([[0], np.cumsum(per_residue)[:-1]])
    bonds = [(s + a, s + b) for s in starts for a, b in ((0, 1), (1, 2), (2, 3))] + [(s + 1, s + 4) for s, n in zip(starts, per_residue) if n == 5]
    bonds += [(starts[i] + 2, starts[i + 1]) for i in range(len(starts) - 1)]
    directed = sorted({(b, a) for a, b in bonds} | {(a, b) for a, b in bonds}, key=lambda p: (p[1], p[0]))
    bond_array = np.array(directed, dtype=np.int64).reshape(-1, 2)
    bond_ends = np.cumsum(np.bincount(bond_array[:, 1], minlength=len(names))).astype(np.int32)
    neighbours, neighbour_ends = peptide_neighbours(np.arange(1, len(sequence) + 1))
    resnames = [THREE[aa] for aa in sequence]
    chain = pdb_chain.split(".")[1]
    arrays = {
        "pos_center": center,
        "atom_pos": pos,
        "atom_types": np.array([ELEMENT_INDEX[n[0]] for n in names], dtype=np.int64),
        "atom_names": np.array([n.encode() for n in names]),
        "atom_residue_names": np.array([resnames[r].encode() for r in residue_of]),
        "atom_chain_names": np.array([chain.encode()] * len(names)),
        "atom_chain_ids": np.zeros(len(names), dtype=np.int64),
        "atom_residue_id": dense_index(residue_of),
        "atom_amino_id": residue_of.astype(np.int64),
        "cov_bond_list": bond_array,
        "cov_bond_list_sindices": bond_ends,
        "cov_bond_list_hb": bond_array,
        "cov_bond_list_sindices_hb": bond_ends.astype(np.int64),
        "amino_pos": pos[:, starts + 1],
        "amino_types": np.array([AMINO_INDEX[n] for n in resnames], dtype=np.int64),
        "amino_chains": np.zeros(len(sequence), dtype=np.int64),
        "amino_neighs": neighbours,
        "amino_neighs_sindices": neighbour_ends,
        "amino_neighs_hb": neighbours,
        "amino_neighs_sindices_hb": neighbour_ends.astype(np.int64),
    }
    return hdf5_bytes(arrays)


THREE = {aa: protein_letters_1to3[aa].upper() for aa in AMINO}


def length_pool() -> list[int]:
    """Real chain lengths: the four PPBS validation label files."""
    return [n for f in sorted((SCANNET / "PPBS").glob("labels_validation_*.txt")) for n in label_file_lengths(f)]


class React:
    """IEConv ProtFunct: text files (GitHub raw) and the HDF5 archive (Google Drive)."""

    SPLITS = {"train": "training.txt", "val": "validation.txt", "test": "testing.txt"}

    def __init__(self, fraction: float, rng: np.random.Generator, taken: set[str]):
        self.seed = int(rng.integers(0, 2**31))
        shape = SHAPES["react"]
        ids = synthetic_ids(rng, sum(keep(p.count, fraction) for p in shape.parts), taken)
        self.chains: dict[str, list[str]] = {}
        start = 0
        for part in shape.parts:
            count = keep(part.count, fraction)
            self.chains[part.split] = [f"{pdb}.A" for pdb in ids[start : start + count]]
            start += count
        self.classes = [f"{1 + i % 6}.{1 + i // 6 % 20}.{1 + i // 120}.{i}" for i in range(384)]
        every = sorted(c for chains in self.chains.values() for c in chains)
        labels = rng.integers(0, len(self.classes), len(every))
        self.files = {name: "".join(f"{c}\n" for c in self.chains[split]) for split, name in self.SPLITS.items()}
        self.files["chain_functions.txt"] = "".join(f"{c},{k}\n" for c, k in zip(every, labels))
        self.files["unique_functions.txt"] = "".join(f"{ec}\n" for ec in self.classes)

    def write_archive(self, path: Path) -> None:
        """``ProtFunct.zip``: one HDF5 per chain under ``data/``, sorted, fixed timestamps."""
        rng = np.random.default_rng(self.seed)
        pool = [n for n in length_pool() if n <= REACT_MAX_LENGTH]
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for chain in sorted(c for chains in self.chains.values() for c in chains):
                sequence = "".join(np.array(list(AMINO))[rng.integers(0, 20, pool[int(rng.integers(0, len(pool)))])])
                info = zipfile.ZipInfo(f"data/{chain}.hdf5", date_time=ZIP_DATE)
                info.external_attr, info.create_system, info.compress_type = 0o100644 << 16, 3, zipfile.ZIP_DEFLATED
                zf.writestr(info, ieconv_chain(chain, sequence, rng))


# --------------------------------------------------------------------------- ATOM3D (psr, lba)


def atom_table(sequence: str, rng: np.random.Generator, ensemble: str, subunit: Any, structure: str) -> pd.DataFrame:
    """The ATOM3D atom table (``bp_to_df`` columns) of a backbone chain A."""
    keepers = [(i, k) for i, aa in enumerate(sequence) for k in range(5) if not (aa == "G" and k == 4)]
    residue = np.array([i for i, _ in keepers])
    atom = [ATOMS[k] for _, k in keepers]
    xyz = backbone(rng, len(sequence))[residue, [k for _, k in keepers]].astype(np.float32)
    n = len(keepers)
    return pd.DataFrame(
        {
            "ensemble": ensemble, "subunit": subunit, "structure": structure, "model": 1, "chain": "A", "hetero": " ",
            "insertion_code": " ", "residue": residue + 1, "segid": "    ", "resname": [THREE[sequence[i]] for i in residue],
            "altloc": " ", "occupancy": 1.0, "bfactor": 0.0, "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
            "element": [a[0] for a in atom], "name": atom, "fullname": [f" {a:<3s}" for a in atom], "serial_number": np.arange(1, n + 1),
        },  # fmt: skip
        columns=list(ATOM_COLUMNS),
    )


def random_sequence(rng: np.random.Generator, pool: list[int]) -> str:
    return "".join(np.array(list(AMINO))[rng.integers(0, 20, pool[int(rng.integers(0, len(pool)))])])


class Atom3d:
    """One ATOM3D tarball: ``<top>/data/{train,val,test}/data.mdb``."""

    def __init__(self, name: str, top: str, fraction: float, rng: np.random.Generator):
        self.name, self.top, self.seed = name, top, int(rng.integers(0, 2**31))
        self.counts = {p.split: keep(p.count, fraction) for p in SHAPES[name].parts}

    def records(self, split: str, rng: np.random.Generator, pool: list[int]):  # noqa: ANN201 (generator)
        if self.name == "psr":
            per = SHAPES["psr"].per_sequence
            for g in range(math.ceil(self.counts[split] / per)):
                target, sequence = f"T{split[:2]}{g:04d}", random_sequence(rng, pool)
                for d in range(min(per, self.counts[split] - g * per)):
                    decoy = f"{target}TS{d:03d}_1"
                    yield {
                        "atoms": atom_table(sequence, rng, target, decoy, f"{decoy}.pdb"),
                        "id": str((target, decoy)),
                        "file_path": f"{target}/{decoy}.pdb",
                        "scores": {"gdt_ts": float(rng.random()), "rmsd": float(rng.random() * 10)},
                    }
        else:
            for i in range(self.counts[split]):
                pdb = f"{i % 9 + 1}{split[:2]}{i:05d}"  # tr / va / te: unique across splits
                sequence = random_sequence(rng, pool)
                protein = atom_table(sequence, rng, f"{pdb}_protein.pdb", 0, f"{pdb}_protein.pdb")
                pocket = protein[protein["residue"].isin(rng.choice(protein["residue"].unique(), min(40, len(sequence)), replace=False))]
                ligand = pd.DataFrame({c: protein[c].iloc[:12].to_numpy() for c in ATOM_COLUMNS}, columns=list(ATOM_COLUMNS))
                ligand["hetero"], ligand["resname"], ligand["chain"] = "H_LIG", "LIG", "L"
                yield {
                    "atoms_protein": protein,
                    "atoms_pocket": pocket.reset_index(drop=True),
                    "atoms_ligand": ligand,
                    "bonds": pd.DataFrame({"atom1": pd.Series(dtype="int64"), "atom2": pd.Series(dtype="int64"), "type": pd.Series(dtype="float64")}),
                    "id": pdb,
                    "seq": [[(f"{pdb}_protein.pdb", 0, f"{pdb}_protein.pdb", 1, "A"), sequence]],
                    "smiles": "",
                    "scores": {"neglog_aff": float(rng.normal(6.0, 2.0))},
                }

    def write_archive(self, path: Path) -> None:
        rng = np.random.default_rng(self.seed)
        pool = length_pool()
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            for split in ("train", "val", "test"):
                write_lmdb(self.records(split, rng, pool), Path(tmp) / self.top / "data" / split, map_size=1 << 38)
            write_tarball(Path(tmp), self.top, path)
