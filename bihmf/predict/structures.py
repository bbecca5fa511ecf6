"""Structure files as protein records in the training schema: which files, which chains, the
ligand of each file and, for pocket runs, the residues near it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from bihmf.data.atom3d import HYDROGENS
from bihmf.data.ligand import Ligand
from bihmf.data.schema import ProteinRecord
from bihmf.data.structure import ATOM_NAMES, ChainResidues, load_structure, read_chains
from bihmf.predict.options import InputError, PredictOptions, RunError
from bihmf.run import TrainedRun

STRUCTURE_NAME = re.compile(r"\.(pdb\d*|ent|cif|mmcif)(\.gz)?$", re.IGNORECASE)
BACKBONE = [ATOM_NAMES.index(name) for name in ("N", "CA", "C")]
ResidueKey = tuple[str, int, str]  # chain, residue number, insertion code


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


BLANK_CHAIN = "_"  # how a blank chain id (common in modelled and MD files) is written on the command line


def chain_name(chain_id: str) -> str:
    """A chain id as the user types and reads it: a blank one is ``_``."""
    return chain_id if chain_id.strip() else BLANK_CHAIN


def protein_chains(path: Path, options: PredictOptions) -> tuple[list[ChainResidues], dict[str, str]]:
    """The chains to predict (the selection, or every protein chain), and every other chain of
    the file with the reason it is not predicted (nucleic acid, lone modified residue, ...)."""
    found = {chain_name(cid): chain for cid, chain in read_chains(path, options.model_index).items()}
    problems = {name: chain.protein_problem() for name, chain in found.items()}
    if options.chains:
        absent = [c for c in options.chains if c not in found]
        if absent:
            raise InputError(f"{path}: chain(s) {absent} not found among its amino-acid chains {sorted(found)}")
        chosen = [found[c] for c in options.chains]
        selected = [problems[c] for c in options.chains if problems[c]]
        if selected:
            raise InputError(f"{path}: {'; '.join(selected)}")
        return chosen, {}
    if not found:
        raise InputError(f"{path}: no protein chain (no amino-acid residue; only hetero groups or waters)")
    chosen = [chain for name, chain in found.items() if problems[name] is None]
    if not chosen:
        raise InputError(f"{path}: no protein chain: {'; '.join(problems.values())}")
    return chosen, {name: problem for name, problem in problems.items() if problem}


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


def file_records(path: Path, name: str, chains: list[ChainResidues], options: PredictOptions) -> list[ProteinRecord]:
    """One record per file, or one per chain with ``per_chain``."""
    groups = [[chain] for chain in chains] if options.per_chain else [chains]
    for group in groups:
        if not any(np.isfinite(c.coords[:, BACKBONE]).all(axis=(1, 2)).any() for c in group):
            raise InputError(f"{path}: missing backbone atoms: no residue of chain(s) {[c.chain for c in group]} has N, CA and C")
    return [
        protein_record(f"{name}_{chain_name(group[0].chain)}" if options.per_chain else name, name, group) for group in groups
    ]


def residue_key(residue: Any) -> ResidueKey:
    return residue.get_parent().id, int(residue.id[1]), residue.id[2].strip()


def pocket_residues(path: Path, ligand: Ligand, cutoff: float, model_index: int) -> set[ResidueKey]:
    """(chain, number, insertion code) of the residues with any heavy atom within ``cutoff`` Å of any ligand heavy atom."""
    model = list(load_structure(path))[model_index]
    near_ligand = cKDTree(ligand.xyz)
    near = set()
    for residue in model.get_residues():
        # the atoms read_chains reads too: per atom the altloc of highest occupancy
        heavy = [atom.coord for atom in residue if atom.element.strip().upper() not in HYDROGENS]
        if heavy and np.isfinite(near_ligand.query(np.asarray(heavy), distance_upper_bound=cutoff)[0]).any():
            near.add(residue_key(residue))
    return near


def pocket_mask(path: Path, record: ProteinRecord, near: set[ResidueKey], cutoff: float) -> np.ndarray:
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

