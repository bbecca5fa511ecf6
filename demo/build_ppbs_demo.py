"""Build ``demo/ppbs_demo.tar.gz``: a tiny fixture in the raw ScanNet PPBS format.

The pipeline downloads PPBS label files, ``table.csv`` and biological-assembly structures.
Tests and offline demos need the same raw formats at a size that fits in the repository, so
this script assembles them from six real PDB entries that MDAnalysisTests ships. The labels
are *derived* here with the PPBS interface definition; they are not the upstream labels.

The archive is byte-reproducible (fixed member order, zero timestamps and owners, gzip headers
without time or name), so a changed sha256 always means changed content.

Rebuild with ``.venv/bin/python demo/build_ppbs_demo.py``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import importlib.util
import io
import os
import tarfile
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from Bio.PDB import MMCIFParser, PDBParser, parse_pdb_header
from Bio.PDB.MMCIF2Dict import MMCIF2Dict
from Bio.PDB.Model import Model
from Bio.PDB.Residue import Residue

TOP = "ppbs_demo"
CONTACT_CUTOFF = 4.0  # Angstrom between heavy atoms of two different protein chains
MIN_LABELLED_RESIDUES = 20  # shorter chains (bound peptides) are partners only
MODEL_INDEX = 0  # every entry here has one identity operator, hence one model

AA3TO1 = {
    "ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C",
    "GLN": "Q", "GLU": "E", "GLY": "G", "HIS": "H", "ILE": "I",
    "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F", "PRO": "P",
    "SER": "S", "THR": "T", "TRP": "W", "TYR": "Y", "VAL": "V",
    "MSE": "M",
}  # fmt: skip
TABLE_COLUMNS = ["", "PDB ID", "Antigen Name", "Organism", "PDB Name", "All PDB ID", "Length",
                 "Set", "Sample weight"]  # same header as ScanNet's BCE table.csv


@dataclass(frozen=True)
class Split:
    """One PPBS subset: the literal ``Set`` string of table.csv and its label file."""

    set_name: str
    label_file: str


TRAIN = Split("Train", "labels_train.txt")
VALIDATION_70 = Split("Validation (70\\%)", "labels_validation_70.txt")
TEST_70 = Split("Test (70\\%)", "labels_test_70.txt")
TEST_HOMOLOGY = Split("Test (Homology)", "labels_test_homology.txt")
SPLITS = (TRAIN, VALIDATION_70, TEST_70, TEST_HOMOLOGY)


@dataclass(frozen=True)
class Entry:
    """A PDB entry, the MDAnalysisTests file it is built from, and its split."""

    pdb_id: str
    source: str
    split: Split

    @property
    def is_mmcif(self) -> bool:
        """mmCIF sources become the ``-assembly1.cif.gz`` fallback instead of a ``.pdb1.gz``."""
        return self.source.endswith(".cif.gz")

    @property
    def archive_name(self) -> str:
        """File name as in the wwPDB biounit / assemblies archives (lower-case id)."""
        suffix = "-assembly1.cif.gz" if self.is_mmcif else ".pdb1.gz"
        return f"structures/{self.pdb_id}{suffix}"


ENTRIES = (
    Entry("1bd2", "mmcif/1BD2.pdb.gz", TRAIN),
    Entry("3kpr", "mmcif/3KPR.pdb.gz", TRAIN),
    Entry("19hc", "19hc.pdb.gz", TRAIN),
    Entry("1hvr", "1hvr.pdb", VALIDATION_70),
    Entry("3pwp", "mmcif/3PWP.cif.gz", TEST_70),
    Entry("4e43", "4E43.pdb", TEST_HOMOLOGY),
)


@dataclass(frozen=True)
class ChainLabels:
    """One label-file entry plus the table.csv fields that describe it."""

    pdb_id: str
    chain: str
    residues: list[tuple[int, str, int]]  # (residue number, one-letter code, label)
    molecule: str
    organism: str
    title: str

    @property
    def origin(self) -> str:
        """PPBS header origin ``<pdbid>_<model>-<chain>``."""
        return f"{self.pdb_id}_{MODEL_INDEX}-{self.chain}"

    @property
    def sequence(self) -> str:
        """Sequence of the labelled residues, used to find redundant copies."""
        return "".join(aa for _, aa, _ in self.residues)


def mdanalysis_data_dir() -> Path:
    """Locate MDAnalysisTests' data without importing it (the import pulls in MDAnalysis)."""
    spec = importlib.util.find_spec("MDAnalysisTests")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("MDAnalysisTests is not installed in this environment")
    return Path(spec.submodule_search_locations[0]) / "data"


def read_source(path: Path) -> str:
    """Read a plain or gzipped PDB/mmCIF file; latin-1 keeps every byte as one character."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    return raw.decode("latin-1")


def gzip_bytes(data: bytes) -> bytes:
    """Gzip with mtime 0 and no file name so that equal input gives equal bytes."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


# --- biological assembly 1 in PDB format -------------------------------------------------

Operator = np.ndarray  # 3x4: rotation | translation
IDENTITY: Operator = np.hstack([np.eye(3), np.zeros((3, 1))])


def biomolecule1_groups(lines: list[str]) -> list[tuple[list[str], list[Operator]]]:
    """Parse REMARK 350 of BIOMOLECULE 1 into (chains, BIOMT operators) groups.

    A biomolecule can apply different operators to different chain sets, so keep the
    groups separate instead of merging them.
    """
    groups: list[tuple[list[str], list[Operator]]] = []
    rows: dict[int, list[list[float]]] = {}
    in_bio1 = False
    for line in lines:
        if not line.startswith("REMARK 350"):
            continue
        text = line[10:].strip()
        if text.startswith("BIOMOLECULE:"):
            in_bio1 = text.split(":")[1].strip() == "1"
        elif not in_bio1:
            continue
        elif "APPLY THE FOLLOWING TO CHAINS:" in text or text.startswith("AND CHAINS:"):
            chains = [c.strip() for c in text.split(":", 1)[1].split(",") if c.strip()]
            if text.startswith("AND CHAINS:"):
                groups[-1][0].extend(chains)
            else:
                rows = {}
                groups.append((chains, []))
        elif text.startswith("BIOMT"):
            serial = int(line[19:23])
            values = [float(line[a:b]) for a, b in ((23, 33), (33, 43), (43, 53), (58, 68))]
            rows.setdefault(serial, []).append(values)
            if len(rows[serial]) == 3:
                groups[-1][1].append(np.array(rows[serial]))
    if not groups or not all(ops for _, ops in groups):
        raise ValueError("REMARK 350 has no BIOMOLECULE 1 with BIOMT operators")
    return groups


def transform_coordinates(line: str, op: Operator) -> str:
    """Apply a BIOMT operator to an ATOM/HETATM line, keeping every other column as is."""
    if np.array_equal(op, IDENTITY):
        return line
    xyz = np.array([float(line[30:38]), float(line[38:46]), float(line[46:54])])
    new = op[:, :3] @ xyz + op[:, 3]
    return line[:30] + "".join(f"{v:8.3f}" for v in new) + line[54:]


def pdb_record(text: str, width: int) -> str:
    """A generated record, padded like the source file's lines (wwPDB pads to 80)."""
    return text.ljust(width) + "\n"


def build_pdb1(text: str) -> str:
    """Rebuild ``<id>.pdb1``: header records, one MODEL per (chain group, BIOMT operator), END.

    The header is everything before the first coordinate record. Each model holds the
    ATOM/HETATM/TER lines of the chains the operator applies to; ANISOU, CONECT and MASTER
    are dropped because they would need re-numbering or rotating.
    """
    lines = text.splitlines(keepends=True)
    if any(line.startswith("MODEL ") for line in lines):
        raise ValueError("expected a single-model asymmetric unit")
    first = next(i for i, line in enumerate(lines) if line.startswith(("ATOM  ", "HETATM")))
    width = len(lines[0].rstrip("\n"))
    out = lines[:first]
    serial = 0
    for chains, operators in biomolecule1_groups(lines[:first]):
        for op in operators:
            serial += 1
            out.append(pdb_record(f"MODEL     {serial:4d}", width))
            out.extend(assembly_lines(lines[first:], set(chains), op))
            out.append(pdb_record("ENDMDL", width))
    out.append(pdb_record("END", width))
    return "".join(out)


def assembly_lines(lines: list[str], chains: set[str], op: Operator) -> list[str]:
    """ATOM/HETATM/TER lines of ``chains``, transformed; a bare TER follows the last atom."""
    kept: list[str] = []
    chain = ""
    for line in lines:
        record = line[:6]
        if record in ("ATOM  ", "HETATM"):
            chain = line[21]
            if chain in chains:
                kept.append(transform_coordinates(line, op))
        elif record.rstrip() == "TER":
            ter_chain = line[21] if len(line.rstrip()) > 21 else chain
            if ter_chain in chains:
                kept.append(line)
    return kept


# --- assembly 1 in mmCIF format ----------------------------------------------------------


def build_assembly_cif(text: str) -> str:
    """Rebuild ``<id>-assembly1.cif``: the entry itself, cut to assembly 1's asym ids.

    Only an identity operator is supported: the fixture does not need generated copies.
    """
    cif = MMCIF2Dict(io.StringIO(text))
    assembly_ids = cif["_pdbx_struct_assembly_gen.assembly_id"]
    gens = [i for i, a in enumerate(assembly_ids) if a == "1"]
    if any(cif["_pdbx_struct_assembly_gen.oper_expression"][i] != "1" for i in gens):
        raise ValueError("assembly 1 uses operators other than 1")
    operators = dict(zip(cif["_pdbx_struct_oper_list.id"], cif["_pdbx_struct_oper_list.type"]))
    if operators.get("1") != "identity operation":
        raise ValueError("operator 1 is not the identity")
    keep = {a for i in gens for a in cif["_pdbx_struct_assembly_gen.asym_id_list"][i].split(",")}
    if set(cif["_atom_site.label_asym_id"]) <= keep:
        return text
    return filter_atom_site(text, keep)


def filter_atom_site(text: str, asym_ids: set[str]) -> str:
    """Drop ``_atom_site`` rows whose ``label_asym_id`` is not in ``asym_ids``."""
    out: list[str] = []
    tags: list[str] = []
    in_rows = False
    for line in text.splitlines(keepends=True):
        if line.startswith("_atom_site."):
            tags.append(line.split()[0])
        elif tags and not in_rows:
            in_rows = True
            column = tags.index("_atom_site.label_asym_id")
        if in_rows and line.startswith(("#", "loop_", "_")):
            tags, in_rows = [], False
        elif in_rows:
            fields = line.split()
            if len(fields) != len(tags):
                raise ValueError(f"unexpected _atom_site row: {line!r}")
            if fields[column] not in asym_ids:
                continue
        out.append(line)
    return "".join(out)


# --- labels -----------------------------------------------------------------------------


def is_amino_acid(residue: Residue) -> bool:
    """Standard residues plus selenomethionine; ligands, waters and other HETATM are not."""
    name = residue.get_resname()
    return name in AA3TO1 and (residue.id[0] == " " or name == "MSE")


def heavy_coords(residues: list[Residue]) -> np.ndarray:
    """Coordinates of non-hydrogen atoms (Biopython's selected altloc) as an (n, 3) array."""
    coords = [a.coord for r in residues for a in r if a.element not in ("H", "D")]
    return np.array(coords, dtype=float).reshape(-1, 3)


def label_model(model: Model) -> dict[str, list[tuple[int, str, int]]]:
    """PPBS-style labels: 1 if a heavy atom lies within 4 A of another protein chain."""
    protein = {ch.id: [r for r in ch if is_amino_acid(r)] for ch in model}
    labels: dict[str, list[tuple[int, str, int]]] = {}
    for chain_id, residues in protein.items():
        with_ca = [r for r in residues if "CA" in r]
        if len(with_ca) < MIN_LABELLED_RESIDUES:
            continue
        partners = heavy_coords([r for c, rs in protein.items() if c != chain_id for r in rs])
        labels[chain_id] = [
            (r.id[1], AA3TO1[r.get_resname()], int(in_contact(heavy_coords([r]), partners)))
            for r in with_ca
        ]
    return labels


def in_contact(atoms: np.ndarray, partners: np.ndarray) -> bool:
    """True if any atom is within CONTACT_CUTOFF of any partner atom."""
    if len(partners) == 0:
        return False
    d2 = ((atoms[:, None, :] - partners[None, :, :]) ** 2).sum(axis=-1)
    return bool(d2.min() <= CONTACT_CUTOFF**2)


# --- table metadata -----------------------------------------------------------------------


def pdb_metadata(text: str) -> tuple[str, dict[str, tuple[str, str]]]:
    """Title and chain -> (molecule, organism) from COMPND/SOURCE, lower-cased like ScanNet."""
    header = parse_pdb_header(io.StringIO(text))
    by_chain: dict[str, tuple[str, str]] = {}
    for mol_id, compound in header["compound"].items():
        source = header["source"].get(mol_id, {})
        organism = source.get("organism_scientific") or ""
        for chain in compound.get("chain", "").split(","):
            by_chain[chain.strip().upper()] = (compound.get("molecule", ""), organism)
    return header["name"], by_chain


def cif_metadata(text: str) -> tuple[str, dict[str, tuple[str, str]]]:
    """Title and chain -> (molecule, organism) from the mmCIF entity categories."""
    cif = MMCIF2Dict(io.StringIO(text))
    names = dict(zip(cif["_entity.id"], cif["_entity.pdbx_description"]))
    organisms = dict(zip(cif.get("_entity_src_gen.entity_id", []),
                         cif.get("_entity_src_gen.pdbx_gene_src_scientific_name", [])))
    by_chain: dict[str, tuple[str, str]] = {}
    for entity, strands in zip(cif["_entity_poly.entity_id"], cif["_entity_poly.pdbx_strand_id"]):
        for chain in strands.split(","):
            by_chain[chain] = (names[entity].lower(), organisms.get(entity, "").lower())
    return cif["_struct.title"][0].lower(), by_chain


def build_entry(entry: Entry, data_dir: Path) -> tuple[bytes, list[ChainLabels]]:
    """Assembly file bytes and the labelled chains of one entry."""
    source = read_source(data_dir / entry.source)
    if entry.is_mmcif:
        assembly = build_assembly_cif(source)
        structure = MMCIFParser(QUIET=True).get_structure(entry.pdb_id, io.StringIO(assembly))
        title, meta = cif_metadata(assembly)
    else:
        assembly = build_pdb1(source)
        structure = PDBParser(QUIET=True).get_structure(entry.pdb_id, io.StringIO(assembly))
        title, meta = pdb_metadata(assembly)
    chains = [
        ChainLabels(entry.pdb_id, chain, residues, *meta.get(chain, ("", "")), title)
        for chain, residues in label_model(structure[MODEL_INDEX]).items()
    ]
    return gzip_bytes(assembly.encode("latin-1")), chains


# --- label files, table, archive ----------------------------------------------------------


def label_file(chains: list[ChainLabels]) -> bytes:
    """ScanNet label file: '>' origin, then '<chain> <resnum> <aa> <label>', LF after every line."""
    lines: list[str] = []
    for c in chains:
        lines.append(f">{c.origin}\n")
        lines.extend(f"{c.chain} {num} {aa} {label}\n" for num, aa, label in c.residues)
    return "".join(lines).encode("ascii")


def sample_weights(chains: list[ChainLabels]) -> list[float]:
    """1 / (copies of the same sequence in the set), so redundant chains count once in total."""
    counts = Counter(c.sequence for c in chains)
    return [1.0 / counts[c.sequence] for c in chains]


def table_csv(by_split: dict[Split, list[ChainLabels]]) -> bytes:
    """table.csv with BCE's columns; rows per set in label-file order, one running index."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    index = 0
    for split, chains in by_split.items():
        for c, weight in zip(chains, sample_weights(chains)):
            writer.writerow([index, c.origin, c.molecule, c.organism, c.title, c.origin,
                             len(c.residues), split.set_name, repr(weight)])
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


def split_stats(chains: list[ChainLabels]) -> str:
    """One summary line: chains, residues and positive residues."""
    residues = sum(len(c.residues) for c in chains)
    positives = sum(label for c in chains for _, _, label in c.residues)
    return f"{len(chains)} chains, {residues} residues, {positives} positive"


def build(data_dir: Path) -> tuple[bytes, dict[Split, list[ChainLabels]]]:
    """Assemble all archive members and return the archive with the labelled chains."""
    files: dict[str, bytes] = {}
    by_split: dict[Split, list[ChainLabels]] = {split: [] for split in SPLITS}
    for entry in ENTRIES:
        structure, chains = build_entry(entry, data_dir)
        files[f"{TOP}/{entry.archive_name}"] = structure
        by_split[entry.split].extend(chains)
    for split, chains in by_split.items():
        files[f"{TOP}/{split.label_file}"] = label_file(chains)
    files[f"{TOP}/table.csv"] = table_csv(by_split)
    return tar_gz(files), by_split


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` only once the new archive is completely written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a committed file should be world-readable
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo/ppbs_demo.tar.gz"),
                        help="archive to write (default: demo/ppbs_demo.tar.gz)")
    args = parser.parse_args()
    archive, by_split = build(mdanalysis_data_dir())
    write_atomic(args.out, archive)
    for split, chains in by_split.items():
        print(f"{split.set_name}: {split_stats(chains)}")
    print(f"{len(archive)} bytes  sha256 {hashlib.sha256(archive).hexdigest()}  {args.out}")


if __name__ == "__main__":
    main()
