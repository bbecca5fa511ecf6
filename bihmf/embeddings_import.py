"""Bring your own embeddings: per-residue embeddings computed elsewhere, imported into the ESM cache.

A config whose ``esm`` block names a ``precomputed`` source instead of a checkpoint gets its
cache from :func:`import_shard` instead of the ESM-2 forward pass; the shards are written by
the same writer functions (``bihmf.esm_cache``) and tied together by the same ``embed_index``,
so training, the report and the loader cannot tell the two apart. Any protein language model
whose per-residue vectors reach disk in one of these layouts works (ProtT5, Ankh, ESM C, a
fine-tuned ESM):

``esm_pt``
    a folder of fair-esm ``scripts/extract.py`` outputs run with ``--include per_tok``: one
    ``<protein_id>.pt`` per protein, a dict with ``label`` (the protein id) and
    ``representations`` {layer number: tensor [L, D]}. Layers keep extract.py's numbers (0 = the
    token embedding); the source's depth is its highest layer number.
``hdf5``
    one file, one dataset per protein named by its protein id: [L, D] is one layer (layer 1),
    [n_layers, L, D] holds layers 1..n_layers (the ProtT5 / Ankh scripts write [L, D]).
``npz``
    one NumPy ``.npz``, one array per protein named by its protein id, shaped as for ``hdf5``.

Rows must follow the protein table's residues (``results/data/<d>/proteins.parquet``): one row
per residue of ``sequence``, chains concatenated in table order. Width and layer count are read
from the data; every protein must agree with the first one. The cache is keyed by chain
sequence, so a chain appearing in several proteins keeps the rows of its first protein in
table order (the count of such chains is logged).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow.parquet as pq

from bihmf.esm_cache import (
    FORMAT,
    ROW_GROUP_BYTES,
    cache_schema,
    chain_sequences,
    embedding_table,
    plan_row_groups,
    residues_per_row_group,
    shard_of,
    shard_writer,
    write_row_group,
)
from bihmf.io import atomic_output, file_digest

log = logging.getLogger(__name__)

FORMATS = ("esm_pt", "hdf5", "npz")  # esm.precomputed.format (the schema's enum)


class SourceError(ValueError):
    """A precomputed source that cannot be imported; the message names the file and the protein."""


class Source(Protocol):
    """An opened source: per protein id, every layer it holds, float32 [n_layers, L, D]."""

    path: Path

    def layers(self, protein_id: str) -> tuple[list[int], np.ndarray]: ...

    def where(self, protein_id: str) -> str: ...


def _stacked(array: np.ndarray, where: str) -> tuple[list[int], np.ndarray]:
    """[L, D] -> layer 1; [n, L, D] -> layers 1..n (the documented numbering of hdf5 / npz)."""
    if array.ndim == 2:
        return [1], array[None]
    if array.ndim == 3:
        return list(range(1, array.shape[0] + 1)), array
    raise SourceError(f"{where}: expected [L, D] or [n_layers, L, D], got shape {list(array.shape)}")


@dataclass
class _Keyed:
    """A file of one array per protein id: HDF5 (a dataset each) or NumPy ``.npz`` (an array each)."""

    path: Path
    handle: Any
    member: str  # what the format calls one protein's array
    names: Collection[str]

    def where(self, protein_id: str) -> str:
        return f"{self.path}: {self.member} {protein_id!r}"

    def layers(self, protein_id: str) -> tuple[list[int], np.ndarray]:
        if protein_id not in self.names:
            raise SourceError(f"{self.path}: no {self.member} for protein {protein_id!r}")
        return _stacked(np.asarray(self.handle[protein_id]), self.where(protein_id))


@dataclass
class _EsmPt:
    path: Path

    def file(self, protein_id: str) -> Path:
        return self.path / f"{protein_id}.pt"

    def where(self, protein_id: str) -> str:
        return str(self.file(protein_id))

    def layers(self, protein_id: str) -> tuple[list[int], np.ndarray]:
        import torch  # only this format needs it

        path = self.file(protein_id)
        if not path.is_file():
            raise SourceError(f"{path}: missing: no extract.py output for protein {protein_id!r}")
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(saved, dict) or "representations" not in saved:
            raise SourceError(f"{path}: no per-residue 'representations' (run extract.py with --include per_tok)")
        if saved.get("label") != protein_id:
            raise SourceError(f"{path}: label {saved.get('label')!r} is not the protein id {protein_id!r}")
        reps = saved["representations"]
        numbers = sorted(int(layer) for layer in reps)
        shapes = {tuple(reps[layer].shape) for layer in numbers}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise SourceError(f"{path}: representations must all be [L, D], got shapes {sorted(shapes)}")
        return numbers, np.stack([reps[layer].float().numpy() for layer in numbers])


@contextmanager
def open_source(precomputed: Mapping[str, Any]) -> Iterator[Source]:
    """The configured source (``esm.precomputed``), opened for reading by protein id."""
    path, kind = Path(precomputed["path"]), precomputed["format"]
    if kind == "esm_pt":
        if not path.is_dir():
            raise SourceError(f"{path}: esm_pt needs a folder of extract.py .pt files")
        yield _EsmPt(path)
    elif kind == "hdf5":
        import h5py

        with h5py.File(path, "r") as handle:
            yield _Keyed(path, handle, "dataset", handle)
    elif kind == "npz":
        with np.load(path, allow_pickle=False) as handle:
            yield _Keyed(path, handle, "array", handle.files)
    else:
        raise SourceError(f"{path}: unknown precomputed format {kind!r} (known: {list(FORMATS)})")


def _first_id(precomputed: Mapping[str, Any]) -> str:
    """A protein id of the source, to read its shape from (the first by name)."""
    path, kind = Path(precomputed["path"]), precomputed["format"]
    if kind == "esm_pt":
        files = sorted(path.glob("*.pt")) if path.is_dir() else []
        if not files:
            raise SourceError(f"{path}: no .pt files")
        return files[0].stem
    if kind == "hdf5":
        import h5py

        with h5py.File(path, "r") as handle:
            names = sorted(handle)
    else:
        with np.load(path, allow_pickle=False) as handle:
            names = sorted(handle.files)
    if not names:
        raise SourceError(f"{path}: holds no protein")
    return names[0]


@lru_cache(maxsize=8)
def _depth(kind: str, path: str) -> int:
    precomputed = {"format": kind, "path": path}
    with open_source(precomputed) as source:
        numbers, _ = source.layers(_first_id(precomputed))
    return max(numbers)


def source_depth(precomputed: Mapping[str, Any]) -> int:
    """The source's highest layer number, read from one protein when the workflow starts (the
    DAG derives the cached layers from it, as it does from a checkpoint's name)."""
    return _depth(precomputed["format"], str(precomputed["path"]))


def source_files(precomputed: Mapping[str, Any], protein_ids: list[str]) -> list[Path]:
    """The files an import of these proteins reads (one per protein for esm_pt)."""
    path = Path(precomputed["path"])
    if precomputed["format"] == "esm_pt":
        return [path / f"{protein_id}.pt" for protein_id in dict.fromkeys(protein_ids)]
    return [path]


def source_digest(files: list[Path]) -> tuple[str, dict[str, str]]:
    """sha256 of every source file, and one digest over them all (the cache's
    ``checkpoint_sha256``: what a run's provenance and the cache checks compare)."""
    digests = {}
    for path in files:
        if not path.is_file():
            raise SourceError(f"{path}: missing")
        digests[path.name] = file_digest(path, "sha256")
    combined = hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()
    return combined, digests


def protein_rows(where: str, protein_id: str, numbers: list[int], stacked: np.ndarray, sequence: str, layers: list[int]) -> np.ndarray:
    """One protein's rows of ``layers``, float16 [L, len(layers), D], checked against its sequence
    (``numbers``, ``stacked``: every layer the source holds for it, as ``Source.layers`` gives them)."""
    missing = [layer for layer in layers if layer not in numbers]
    if missing:
        raise SourceError(f"{where}: protein {protein_id!r} lacks layers {missing} (holds {numbers}); "
                          "choose model.esm_layers / layer_pairing within them")
    if stacked.shape[1] != len(sequence):
        raise SourceError(f"{where}: protein {protein_id!r} has {stacked.shape[1]} rows, its sequence {len(sequence)} residues "
                          "(rows must follow the protein table's residues; extract.py truncates at --truncation_seq_length)")
    chosen = stacked[[numbers.index(layer) for layer in layers]]
    if not np.isfinite(chosen).all():
        raise SourceError(f"{where}: protein {protein_id!r} has NaN or infinite values")
    if chosen.size and np.abs(chosen).max() > np.finfo(np.float16).max:
        raise SourceError(f"{where}: protein {protein_id!r} has values beyond float16's range (|x| > 65504), the cache's dtype")
    return np.ascontiguousarray(chosen.astype(np.float16).transpose(1, 0, 2))


@dataclass(frozen=True)
class Shape:
    """Layer numbers and width of the first protein read, which every other one must match."""

    numbers: tuple[int, ...]
    width: int


def _check_shape(where: str, protein_id: str, numbers: list[int], stacked: np.ndarray, expected: Shape | None) -> Shape:
    found = Shape(tuple(numbers), int(stacked.shape[-1]))
    if expected is not None and found != expected:
        raise SourceError(f"{where}: protein {protein_id!r} holds layers {list(found.numbers)} of width "
                          f"{found.width}, the first protein layers {list(expected.numbers)} of width {expected.width}")
    return found


def import_shard(
    precomputed: Mapping[str, Any],
    proteins: Path,
    layers: list[int],
    shard: int,
    n_shards: int,
    out: Path,
    *,
    row_group_bytes: int = ROW_GROUP_BYTES,
) -> int:
    """The import job: this shard's distinct chains of a protein table, rows from the source;
    returns how many chains it wrote. Every protein of the table is checked (shape, layers,
    width), not only this shard's, so each shard job fails on the same bad protein."""
    table = pq.read_table(proteins, columns=["protein_id", "sequence", "chain_ids"])
    ids, sequences, chain_ids = (table[name].to_pylist() for name in ("protein_id", "sequence", "chain_ids"))
    combined, digests = source_digest(source_files(precomputed, ids))
    chains: dict[str, np.ndarray] = {}
    shared = 0
    shape: Shape | None = None
    with open_source(precomputed) as source:
        for protein_id, sequence, chain_list in zip(ids, sequences, chain_ids, strict=True):
            numbers, stacked = source.layers(protein_id)
            where = source.where(protein_id)
            shape = _check_shape(where, protein_id, numbers, stacked, shape)
            rows = protein_rows(where, protein_id, numbers, stacked, sequence, layers)
            start = 0
            for key, chain in chain_sequences(sequence, chain_list):
                if shard_of(key, n_shards) == shard:
                    if key in chains:
                        shared += 1
                    else:
                        chains[key] = rows[start : start + len(chain)]
                start += len(chain)
    if shape is None:
        raise SourceError(f"{proteins}: the protein table is empty")
    metadata = {
        "format": FORMAT,
        "checkpoint": Path(precomputed["path"]).name,
        "checkpoint_sha256": combined,
        "embed_dim": str(shape.width),
        "esm_depth": str(max(shape.numbers)),
        "layers": json.dumps(layers),
        "dtype": "float16",
        "window": "none",
        "window_overlap": "none",
        "precision": "none",  # computed elsewhere, at a precision the source does not record
        "source_format": precomputed["format"],
        "source_files": json.dumps(digests, sort_keys=True),
        "shard": str(shard),
        "n_shards": str(n_shards),
    }
    _write(out, metadata, layers, shape.width, chains, row_group_bytes)
    log.info("shard %d of %d: %d chains from %s (%s, layers %s, width %d); %d chain copies kept from their first protein",
             shard, n_shards, len(chains), precomputed["path"], precomputed["format"], layers, shape.width, shared)
    return len(chains)


def _write(out: Path, metadata: dict[str, str], layers: list[int], width: int, chains: dict[str, np.ndarray], row_group_bytes: int) -> None:
    """One shard through the cache's writer functions (schema, row groups, writer settings)."""
    schema = cache_schema(layers, width, metadata)
    keys = list(chains)
    groups = plan_row_groups([len(chains[key]) for key in keys], residues_per_row_group(len(layers), width, row_group_bytes))
    with atomic_output(out) as tmp, shard_writer(tmp, schema) as writer:
        for group in groups:
            write_row_group(writer, embedding_table(schema, [keys[r] for r in group], [chains[keys[r]] for r in group]))
