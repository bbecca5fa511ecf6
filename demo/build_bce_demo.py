"""Build ``demo/bce_demo.tar.gz``: a tiny fixture in the raw ScanNet BCE format.

BCE (B-cell epitopes) ships five label files, ``table.csv`` and asymmetric-unit mmCIF
structures. Tests and offline demos need the same raw formats at a size that fits in the
repository, so this script assembles them from three real PDB entries that MDAnalysisTests
ships. None of them is an antibody complex: they are T-cell receptor - peptide - MHC class I
complexes, and the TCR stands in for the antibody. The "antigen" chains are the MHC heavy
chain, the peptide and beta-2-microglobulin. The labels are *derived* here; they are not the
upstream labels.

The archive is byte-reproducible in the same way as the PPBS fixture (see
``build_ppbs_demo.py``, whose helpers are imported here).

Rebuild with ``.venv/bin/python demo/build_bce_demo.py``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import sys
import tarfile
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from Bio.PDB import MMCIFParser
from Bio.PDB.MMCIF2Dict import MMCIF2Dict
from Bio.PDB.Model import Model

sys.dont_write_bytecode = True  # keep demo/ free of __pycache__ from the import below
sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_ppbs_demo import (  # noqa: E402  (shared helpers of the PPBS fixture)
    AA3TO1,
    CONTACT_CUTOFF,
    TABLE_COLUMNS,
    cif_metadata,
    gzip_bytes,
    heavy_coords,
    in_contact,
    is_amino_acid,
    mdanalysis_data_dir,
    read_source,
    write_atomic,
)

TOP = "bce_demo"
MODEL_INDEX = 0  # BCE uses the asymmetric unit: one model in every entry here
FOLDS = (1, 2, 3, 4, 5)

SOURCES = {  # lower-case PDB id -> MDAnalysisTests file (the asymmetric unit as mmCIF)
    "1bd2": "mmcif/1BD2.cif.gz",
    "3kpr": "mmcif/3KPR.cif.gz",
    "3pwp": "mmcif/3PWP.cif.gz",
}

# Roles of polymer entities, recognised from ``_entity.pdbx_description`` (first match wins).
ROLE_PATTERNS = (
    ("tcr", ("T CELL RECEPTOR", "TCR")),
    ("b2m", ("MICROGLOBULIN",)),
    ("peptide", ("PEPTIDE", "MIMOTOPE")),
    ("mhc", ("HLA",)),
)
ANTIBODY_ROLE = "tcr"  # contacts with these chains define the epitope labels


@dataclass(frozen=True)
class Entry:
    """One BCE example: chains of an asymmetric unit, their expected roles and their fold."""

    pdb_id: str
    chains: str  # one character per chain, as in the BCE header
    roles: tuple[str, ...]  # checked against the entity records
    fold: int

    @property
    def origin(self) -> str:
        """BCE header origin ``<pdbid>_<chains>`` (no model index)."""
        return f"{self.pdb_id}_{self.chains}"


ENTRIES = (
    Entry("1bd2", "B", ("b2m",), 1),
    Entry("3kpr", "AC", ("mhc", "peptide"), 2),
    Entry("3kpr", "FH", ("mhc", "peptide"), 3),  # second complex of the asymmetric unit
    Entry("1bd2", "AC", ("mhc", "peptide"), 4),
    Entry("3pwp", "AC", ("mhc", "peptide"), 5),
)


@dataclass(frozen=True)
class EntryLabels:
    """One label-file entry plus the table.csv fields that describe it."""

    entry: Entry
    residues: list[tuple[str, int, str, int]]  # (chain, residue number, one-letter code, label)
    molecule: str
    organism: str
    title: str

    @property
    def sequence(self) -> str:
        """Concatenated sequence of the labelled residues, used to find redundant copies."""
        return "".join(aa for _, _, aa, _ in self.residues)


@dataclass(frozen=True)
class Structure:
    """A parsed asymmetric unit with its metadata."""

    text: str
    model: Model
    title: str
    meta: dict[str, tuple[str, str]]  # chain -> (molecule, organism), lower-cased
    roles: dict[str, str]  # chain -> role from ROLE_PATTERNS


def entity_role(description: str) -> str:
    """Role of a polymer entity from its description; unknown descriptions are an error."""
    upper = description.upper()
    for role, patterns in ROLE_PATTERNS:
        if any(p in upper for p in patterns):
            return role
    raise ValueError(f"no role for entity {description!r}")


def chain_roles(text: str) -> dict[str, str]:
    """Author chain id -> role, from ``_entity`` and ``_entity_poly``."""
    cif = MMCIF2Dict(io.StringIO(text))
    names = dict(zip(cif["_entity.id"], cif["_entity.pdbx_description"]))
    return {
        chain: entity_role(names[entity])
        for entity, strands in zip(cif["_entity_poly.entity_id"], cif["_entity_poly.pdbx_strand_id"])
        for chain in strands.split(",")
    }


@cache
def load_structure(pdb_id: str, data_dir: Path) -> Structure:
    text = read_source(data_dir / SOURCES[pdb_id])
    structure = MMCIFParser(QUIET=True).get_structure(pdb_id, io.StringIO(text))
    if len(structure) != 1:
        raise ValueError(f"{pdb_id}: expected one model, found {len(structure)}")
    title, meta = cif_metadata(text)
    return Structure(text, structure[MODEL_INDEX], title, meta, chain_roles(text))


def label_entry(entry: Entry, structure: Structure) -> list[tuple[str, int, str, int]]:
    """Label 1 if a heavy atom lies within 4 A of a heavy atom of any TCR chain of the unit."""
    model = structure.model
    for chain, role in zip(entry.chains, entry.roles, strict=True):
        if structure.roles.get(chain) != role:
            raise ValueError(f"{entry.origin}: chain {chain} is {structure.roles.get(chain)}, expected {role}")
    antibody = [c for c, role in structure.roles.items() if role == ANTIBODY_ROLE]
    partners = heavy_coords([r for c in antibody for r in model[c] if is_amino_acid(r)])
    return [
        (chain, r.id[1], AA3TO1[r.get_resname()], int(in_contact(heavy_coords([r]), partners)))
        for chain in entry.chains
        for r in model[chain]
        if is_amino_acid(r) and "CA" in r
    ]


def build_entry(entry: Entry, data_dir: Path) -> EntryLabels:
    structure = load_structure(entry.pdb_id, data_dir)
    meta = [structure.meta.get(chain, ("", "")) for chain in entry.chains]
    return EntryLabels(
        entry,
        label_entry(entry, structure),
        " | ".join(molecule for molecule, _ in meta),
        " | ".join(organism for _, organism in meta),
        structure.title,
    )


# --- label files, table, archive ----------------------------------------------------------


def label_file(entries: list[EntryLabels]) -> bytes:
    """BCE label file: '>' origin, then '<chain> <resnum> <aa> <label>', LF after every line."""
    lines: list[str] = []
    for e in entries:
        lines.append(f">{e.entry.origin}\n")
        lines.extend(f"{chain} {num} {aa} {label}\n" for chain, num, aa, label in e.residues)
    return "".join(lines).encode("ascii")


def sample_weights(entries: list[EntryLabels]) -> list[float]:
    """1 / (entries of the same fold with the same concatenated sequence)."""
    counts = Counter(e.sequence for e in entries)
    return [1.0 / counts[e.sequence] for e in entries]


def table_csv(by_fold: dict[int, list[EntryLabels]]) -> bytes:
    """table.csv: rows per fold in label-file order, one running index."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    index = 0
    for fold, entries in by_fold.items():
        for e, weight in zip(entries, sample_weights(entries)):
            writer.writerow([index, e.entry.origin, e.molecule, e.organism, e.title, e.entry.origin,
                             len(e.residues), f"Fold {fold}", repr(weight)])
            index += 1
    return buf.getvalue().encode("ascii")


def tar_gz(files: dict[str, bytes]) -> bytes:
    """Deterministic tar.gz: sorted members, zero times and owners, fixed modes."""
    dirs = {str(Path(name).parent) for name in files} | {TOP}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(dirs | set(files)):
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if name in dirs:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.mode, info.size = 0o644, len(files[name])
                tar.addfile(info, io.BytesIO(files[name]))
    return gzip_bytes(raw.getvalue())


def fold_stats(entries: list[EntryLabels]) -> str:
    """One summary line: entries, chains, residues and positive residues."""
    chains = sum(len(e.entry.chains) for e in entries)
    residues = sum(len(e.residues) for e in entries)
    positives = sum(label for e in entries for *_, label in e.residues)
    origins = " ".join(e.entry.origin for e in entries)
    return f"{origins}: {chains} chains, {residues} residues, {positives} positive"


def build(data_dir: Path) -> tuple[bytes, dict[int, list[EntryLabels]]]:
    """Assemble all archive members and return the archive with the labelled entries."""
    files: dict[str, bytes] = {}
    by_fold: dict[int, list[EntryLabels]] = {fold: [] for fold in FOLDS}
    for entry in ENTRIES:
        by_fold[entry.fold].append(build_entry(entry, data_dir))
    for pdb_id in sorted({entry.pdb_id for entry in ENTRIES}):
        text = load_structure(pdb_id, data_dir).text
        files[f"{TOP}/structures/{pdb_id}.cif.gz"] = gzip_bytes(text.encode("latin-1"))
    for fold, entries in by_fold.items():
        files[f"{TOP}/labels_fold{fold}.txt"] = label_file(entries)
    files[f"{TOP}/table.csv"] = table_csv(by_fold)
    return tar_gz(files), by_fold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo/bce_demo.tar.gz"),
                        help="archive to write (default: demo/bce_demo.tar.gz)")
    args = parser.parse_args()
    archive, by_fold = build(mdanalysis_data_dir())
    write_atomic(args.out, archive)
    for fold, entries in by_fold.items():
        print(f"Fold {fold}: {fold_stats(entries)}")
    print(f"{len(archive)} bytes  sha256 {hashlib.sha256(archive).hexdigest()}  {args.out}")


if __name__ == "__main__":
    main()
