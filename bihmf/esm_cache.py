"""The ESM layer cache on disk: sharded float16 Parquet files, an index, and the reader.

Layout of one cache (one dataset, one checkpoint), see ``docs/esm_cache.md``::

    <cache dir>/shard-<i>-of-<n>.parquet   one Snakemake job each; rows = distinct chains
    <cache dir>/index.parquet              seq_hash -> (shard, row group, row); the cache's address

A shard row is one distinct chain sequence (key: sha256 of the sequence), columns
``seq_hash``, ``length`` and one ``list<fixed_size_binary(2 x D)>`` column per cached layer:
one Parquet value per residue holding its D little-endian float16 numbers, uncompressed.
That encoding was chosen by measurement (``bench/cache_writer.py``, BENCHMARKS.md): a value
per number (format 1) made Parquet's per-value work the writer's bottleneck, and compression
saves little on float16 activations, whose mantissa bytes are noise. Row groups hold about
``ROW_GROUP_BYTES`` of embeddings, so a reader decodes one row group (a few chains) to serve
one chain, never a whole shard.

Chains, not whole proteins, are the unit because ESM-2 was trained on single chains: a
multi-chain protein is embedded chain by chain and its embedding is the concatenation.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bihmf.data.schema import sequence_hash
from bihmf.integrity import WRITE_OPTIONS, check_embeddings, parquet_file, read_metadata, read_table
from bihmf.io import atomic_output
from bihmf.layout import SHARD_FILE

if TYPE_CHECKING:
    from bihmf.data.schema import ProteinRecord

FORMAT = "bihmf-esm-cache/2"
# Format 1 stored one float16 Parquet value per number (list<fixed_size_list<float16, D>>,
# byte-stream split, zstd): the same numbers, still read, so older caches need no re-embedding.
READABLE_FORMATS = (FORMAT, "bihmf-esm-cache/1")
# How a residue's float16 numbers are laid out in its fixed-size binary value.
VALUE_DTYPE = np.dtype("<f2")
# Decoded size of one row group: small enough that serving one chain reads little more than
# that chain, large enough that the footer stays small (one entry per row group and column).
ROW_GROUP_BYTES = 8 * 2**20
# Bound of a reader's decoded row groups: a few dozen groups, small beside any job's memory.
DECODED_BYTES = 256 * 2**20
# Metadata every shard of one cache must share (the shard number is the only difference).
SHARED_KEYS = ("format", "checkpoint", "checkpoint_sha256", "embed_dim", "esm_depth", "layers", "dtype", "window", "window_overlap", "precision", "n_shards")
# Arithmetic of the ESM forward pass (config esm.precision); the cache stores float16 whichever it is.
PRECISIONS = ("float32", "float16", "bfloat16")
UNKNOWN_PRECISION = ("it was built before esm.precision was recorded (float32 on a CPU, float16 autocast on CUDA); "
                     "re-run the embed stage")


@dataclass(frozen=True)
class CacheInfo:
    """A cache's shared metadata (``SHARED_KEYS``), typed. Parquet metadata values are strings;
    parsing them once where a cache (or a run's copy of its metadata) is read turns a missing or
    malformed key into one error naming the file, instead of a KeyError deep in a job."""

    format: str
    checkpoint: str
    checkpoint_sha256: str
    embed_dim: int
    esm_depth: int
    layers: tuple[int, ...]
    dtype: str
    window: int | None  # None: imported embeddings (bihmf/embeddings_import.py), windows unknown
    window_overlap: int | None
    n_shards: int

    @classmethod
    def parse(cls, metadata: Mapping[str, str], source: Path | str) -> CacheInfo:
        """From a cache index's metadata, or a run's provenance copy of it (``source`` names it)."""
        missing = [field.name for field in fields(cls) if field.name not in metadata]
        if missing:
            raise ValueError(f"{source}: ESM cache metadata lacks {missing}")
        text = {key: metadata[key] for key in ("format", "checkpoint", "checkpoint_sha256", "dtype")}
        try:
            numbers = {key: int(metadata[key]) for key in ("embed_dim", "esm_depth", "n_shards")}
            windows = {key: None if metadata[key] == "none" else int(metadata[key]) for key in ("window", "window_overlap")}
            layers = tuple(int(layer) for layer in json.loads(metadata["layers"]))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: malformed ESM cache metadata ({err})") from err
        return cls(layers=layers, **text, **numbers, **windows)


@dataclass(frozen=True)
class EmbedSettings:
    """How the embed code batches and windows sequences: one object from the config's ``esm``
    section to the forward pass, under the config's names.

    The window settings and the precision change the numbers, so every cache records them
    (``cache_metadata``) and a later caller embedding extra chains for that cache reads them back
    (``from_cache``). The token budget only sizes batches (batching does not change the numbers),
    so a cache does not record it and such a caller chooses its own. The precision defaults to
    float32, what fair-esm's extract.py computes (as the config's schema does).
    """

    token_budget: int
    window: int
    window_overlap: int
    precision: str = "float32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"esm.precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")

    @classmethod
    def from_config(cls, esm_cfg: Mapping[str, Any]) -> EmbedSettings:
        """From a validated config's ``esm`` section (the schema fills the defaults)."""
        return cls(int(esm_cfg["token_budget"]), int(esm_cfg["window"]), int(esm_cfg["window_overlap"]), esm_cfg["precision"])

    @classmethod
    def from_cache(cls, metadata: Mapping[str, str], token_budget: int) -> EmbedSettings:
        """The window settings and precision a cache was built with, from its metadata."""
        if "precision" not in metadata:
            raise ValueError(f"the cache {metadata.get('checkpoint')} records no precision: {UNKNOWN_PRECISION}")
        return cls(token_budget, int(metadata["window"]), int(metadata["window_overlap"]), metadata["precision"])

    def cache_metadata(self) -> dict[str, str]:
        """What a cache records of these settings (Parquet metadata values are strings)."""
        return {"window": str(self.window), "window_overlap": str(self.window_overlap), "precision": self.precision}


def chain_sequences(sequence: str, chain_ids: Sequence[str]) -> list[tuple[str, str]]:
    """(sha256, sequence) of each chain, in residue order; a chain is a run of equal chain ids."""
    chains, start = [], 0
    for _, run in groupby(chain_ids):
        end = start + len(list(run))
        chains.append((sequence_hash(sequence[start:end]), sequence[start:end]))
        start = end
    return chains


def read_chains(proteins: Path) -> dict[str, str]:
    """Distinct chains of a protein table, hash -> sequence, in order of first appearance.

    Reads only the two columns it needs: the embed jobs never touch coordinates.
    """
    table = read_table(proteins, columns=["sequence", "chain_ids"])
    chains: dict[str, str] = {}
    for sequence, chain_ids in zip(table["sequence"].to_pylist(), table["chain_ids"].to_pylist(), strict=True):
        chains.update(chain_sequences(sequence, chain_ids))
    return chains


def shard_of(seq_hash: str, n_shards: int) -> int:
    """Shard of a chain: from its content hash, so it never depends on dataset order."""
    return int(seq_hash[:16], 16) % n_shards


def shard_name(shard: int, n_shards: int) -> str:
    return SHARD_FILE.format(shard=shard, shards=n_shards)


def layer_column(layer: int) -> str:
    return f"layer_{layer}"


def residues_per_row_group(n_layers: int, embed_dim: int, row_group_bytes: int = ROW_GROUP_BYTES) -> int:
    return max(1, row_group_bytes // (n_layers * embed_dim * 2))


def plan_row_groups(lengths: Sequence[int], residues_per_group: int) -> list[range]:
    """Consecutive rows per row group, closing a group before it would exceed the budget."""
    groups, start, residues = [], 0, 0
    for row, length in enumerate(lengths):
        if row > start and residues + length > residues_per_group:
            groups.append(range(start, row))
            start, residues = row, 0
        residues += length
    if start < len(lengths):
        groups.append(range(start, len(lengths)))
    return groups


def cache_schema(layers: Sequence[int], embed_dim: int, metadata: dict[str, str]) -> pa.Schema:
    fields = [pa.field("seq_hash", pa.string()), pa.field("length", pa.int32())]
    fields += [pa.field(layer_column(layer), pa.list_(pa.binary(embed_dim * VALUE_DTYPE.itemsize))) for layer in layers]
    return pa.schema(fields, metadata=metadata)


def layer_major(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """float16 [n_layers, residues, D] of chains' [L, n_layers, D] arrays, in one copy: each
    layer's residues contiguous, as its column's values need them. One assignment per chain
    rather than one concatenate per layer moves the same bytes in a tenth of the numpy calls,
    which is what let two writer threads scale (BENCHMARKS.md, "Cache writer")."""
    if any(a.dtype != VALUE_DTYPE for a in arrays):  # its bytes would be cut into residues of the wrong size
        raise TypeError(f"the cache stores float16 embeddings, got {sorted({str(a.dtype) for a in arrays})}")
    out = np.empty((arrays[0].shape[1], sum(len(a) for a in arrays), arrays[0].shape[2]), VALUE_DTYPE)
    start = 0
    for chain in arrays:
        out[:, start : start + len(chain)] = chain.transpose(1, 0, 2)
        start += len(chain)
    return out


def residue_values(values: np.ndarray, offsets: pa.Array) -> pa.ListArray:
    """One layer column from its float16 [residues, D] values: per chain (``offsets``) a list of
    residues, each one fixed-size binary value holding the residue's D numbers."""
    width = pa.binary(values.shape[1] * VALUE_DTYPE.itemsize)
    residues = pa.FixedSizeBinaryArray.from_buffers(width, len(values), [None, pa.py_buffer(values)])
    return pa.ListArray.from_arrays(offsets, residues)


def embedding_table(schema: pa.Schema, keys: Sequence[str], arrays: Sequence[np.ndarray]) -> pa.Table:
    """Rows for ``keys`` from float16 arrays [L, n_layers, D] (layer order as in ``schema``)."""
    lengths = np.array([len(a) for a in arrays], np.int32)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    columns = [pa.array(keys, pa.string()), pa.array(lengths, pa.int32())]
    columns += [residue_values(layer, offsets) for layer in layer_major(arrays)]
    return pa.Table.from_arrays(columns, schema=schema)


def layer_values(column: pa.ChunkedArray, embed_dim: int) -> np.ndarray:
    """float16 [residues, D] of one layer column of a row group, of either readable format.

    Format 2's residue values are viewed in place (no per-number decoding); format 1's nested
    float16 lists are flattened by Arrow.
    """
    residues = column.combine_chunks().flatten()
    if pa.types.is_fixed_size_binary(residues.type):
        offset = residues.offset * residues.type.byte_width
        return np.frombuffer(residues.buffers()[1], VALUE_DTYPE, len(residues) * embed_dim, offset).reshape(-1, embed_dim)
    return residues.flatten().to_numpy(zero_copy_only=False).reshape(-1, embed_dim)


def _writer_options() -> dict:
    """Uncompressed, no dictionary (BENCHMARKS.md, "Cache writer": zstd or lz4 saved under a
    tenth of the bytes at two to four times the encode cost). No column statistics and no Arrow
    schema in the footer: nothing reads them (the index says where a chain is; the Parquet
    types alone read back as written), and with a row group every ~270 residues at esm2_t33
    width their footer bytes would be most of the file's overhead. Page checksums stay
    (bihmf/integrity.py)."""
    return {
        "compression": "none",
        "use_dictionary": False,
        "write_statistics": False,
        "store_schema": False,
        **WRITE_OPTIONS,
    }


def shard_writer(path: Path | pa.NativeFile, schema: pa.Schema, **options: Any) -> pq.ParquetWriter:
    """A shard's writer; ``options`` override the cache's codec settings (bench/cache_writer.py
    compares candidates with the same footer and metadata)."""
    writer = pq.ParquetWriter(path, schema, **{**_writer_options(), **options})
    writer.add_key_value_metadata(schema.metadata or {})  # without the Arrow schema, the only copy
    return writer


def write_row_group(writer: pq.ParquetWriter, table: pa.Table) -> None:
    """Append ``table`` as exactly one row group (row groups are planned by the caller)."""
    writer.write_table(table, row_group_size=max(1, table.num_rows))


def read_row_groups(path: Path) -> list[pa.Table]:
    parquet = parquet_file(path)
    return [parquet.read_row_group(i) for i in range(parquet.num_row_groups)]


def file_metadata(path: Path) -> dict[str, str]:
    """Key-value metadata of a Parquet file (footer only), minus Arrow's own schema entry."""
    raw = read_metadata(path).metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items() if k != b"ARROW:schema"}


def _locations(path: Path, shard: int) -> dict[str, list]:
    """Index rows of one shard: where each chain sits (reads only the ``seq_hash`` column)."""
    parquet = parquet_file(path)
    rows: dict[str, list] = {"seq_hash": [], "shard": [], "row_group": [], "row": []}
    for group in range(parquet.num_row_groups):
        keys = parquet.read_row_group(group, columns=["seq_hash"])["seq_hash"].to_pylist()
        rows["seq_hash"] += keys
        rows["shard"] += [shard] * len(keys)
        rows["row_group"] += [group] * len(keys)
        rows["row"] += list(range(len(keys)))
    return rows


def write_index(index: Path, shards: Sequence[Path], required: Iterable[str]) -> None:
    """Tie the shards of one cache together; refuse a cache that is mixed or incomplete.

    The index is what training depends on, so a missing chain or a shard built with another
    checkpoint or layer list fails here, in the embed stage, and not in a training job.
    """
    if not shards:
        raise ValueError(f"{index}: no shards given")
    metas = [file_metadata(path) for path in shards]
    shared = {key: metas[0][key] for key in SHARED_KEYS if key in metas[0]}  # a format-1 shard has no precision
    for path, meta in zip(shards, metas, strict=True):
        differing = [key for key in SHARED_KEYS if meta.get(key) != shared.get(key)]
        if differing:
            raise ValueError(f"{path}: metadata {differing} differs from {shards[0]}; the shards belong to different caches")
    numbers = sorted(int(meta["shard"]) for meta in metas)
    if numbers != list(range(int(shared["n_shards"]))):
        raise ValueError(f"{index}: expected shards 0..{int(shared['n_shards']) - 1} once each, got {numbers}")
    columns: dict[str, list] = {"seq_hash": [], "shard": [], "row_group": [], "row": []}
    for path, meta in zip(shards, metas, strict=True):
        for name, values in _locations(path, int(meta["shard"])).items():
            columns[name] += values
    present = set(columns["seq_hash"])
    if len(present) != len(columns["seq_hash"]):
        raise ValueError(f"{index}: a sequence hash appears in more than one shard row")
    missing = sorted(set(required) - present)
    if missing:
        raise ValueError(f"{index}: {len(missing)} chains have no embedding (first: {missing[0]}); the cache is incomplete")
    types = {"seq_hash": pa.string(), "shard": pa.int32(), "row_group": pa.int32(), "row": pa.int32()}
    table = pa.table({name: pa.array(values, types[name]) for name, values in columns.items()}).replace_schema_metadata(shared)
    with atomic_output(index) as tmp:
        pq.write_table(table, tmp, compression="zstd", **WRITE_OPTIONS)


def check_precision(path: Path, metadata: Mapping[str, str], precision: str) -> None:
    """Refuse a cache computed at another ``esm.precision`` than ``precision`` (or at an unrecorded one)."""
    if "precision" not in metadata:
        raise ValueError(f"{path}: asked for esm.precision {precision}, but {UNKNOWN_PRECISION}")
    if metadata["precision"] != precision:
        raise ValueError(
            f"{path}: computed at esm.precision {metadata['precision']}, asked for {precision}; two precisions never "
            "share a cache: re-run the embed stage with the precision you want"
        )


class EmbeddingCache:
    """Read access to one cache through its index: ``protein(record)`` -> float32 [N, n_layers, D],
    ``rows(record, layers)`` -> float16 [N, len(layers), D] (what training keeps until the device).

    Serving a chain decodes only its row group (only the asked layer columns). Decoded row
    groups stay in a least-recently-used store bounded by ``decoded_bytes``: reading proteins
    in table order (rows are stored in the order chains first appear) decodes each row group
    about once, and a training job streaming shuffled batches re-decodes a group only when
    more distinct groups were touched since than the bound holds, so the job's memory stays
    bounded by its declared size, not by the split's. Reads are serialised by a lock, so a
    background batch producer and the main thread can share one cache.
    ``layers`` / ``checkpoint_sha256`` / ``precision``, when given, are checked against what the
    cache was built with, so a caller never silently gets embeddings of another model, layer list
    or arithmetic.
    """

    def __init__(
        self, path: Path, *, layers: Sequence[int] | None = None, checkpoint_sha256: str | None = None,
        precision: str | None = None, decoded_bytes: int = DECODED_BYTES,
    ):
        index = read_table(path)
        self.path = Path(path)
        self.metadata: dict[str, str] = {k.decode(): v.decode() for k, v in (index.schema.metadata or {}).items()}
        if self.metadata.get("format") not in READABLE_FORMATS:
            raise ValueError(
                f"{path}: cache format {self.metadata.get('format')!r} is not one this bihmf reads ({', '.join(READABLE_FORMATS)}); "
                f"delete {self.path.parent} and re-run the embed stage"
            )
        self.info = CacheInfo.parse(self.metadata, path)
        self.layers: list[int] = list(self.info.layers)
        if layers is not None and list(layers) != self.layers:
            raise ValueError(f"{path}: built for layers {self.layers}, asked for {list(layers)}; re-run the embed stage")
        if checkpoint_sha256 is not None and checkpoint_sha256 != self.info.checkpoint_sha256:
            raise ValueError(
                f"{path}: built from checkpoint sha256 {self.info.checkpoint_sha256}, asked for {checkpoint_sha256}; re-run the embed stage"
            )
        if precision is not None:
            check_precision(path, self.metadata, precision)
        self._where = {
            key: (shard, group, row)
            for key, shard, group, row in zip(
                index["seq_hash"].to_pylist(), index["shard"].to_pylist(), index["row_group"].to_pylist(), index["row"].to_pylist(), strict=True
            )
        }
        self._files: dict[int, pq.ParquetFile] = {}
        self._decoded: OrderedDict[tuple[int, int, tuple[int, ...]], tuple[np.ndarray, list[np.ndarray]]] = OrderedDict()
        self._decoded_bytes = decoded_bytes
        self._lock = threading.Lock()

    def __contains__(self, seq_hash: str) -> bool:
        return seq_hash in self._where

    def protein(self, record: ProteinRecord) -> np.ndarray:
        """Embedding of one protein record, float32 [N, n_layers, D] aligned with its residues."""
        return self.rows(record).astype(np.float32)

    def rows(self, record: ProteinRecord, layers: Sequence[int] | None = None) -> np.ndarray:
        """The protein's rows of ``layers`` (default: all cached), float16 [N, len(layers), D] as stored."""
        chosen = tuple(self.layers if layers is None else layers)
        missing = [layer for layer in chosen if layer not in self.layers]
        if missing:
            raise ValueError(f"{self.path}: layers {missing} are not cached (cached: {self.layers})")
        rows = np.concatenate([self._chain(key, chosen) for key, _ in chain_sequences(record.sequence, record.chain_ids)])
        return check_embeddings(rows, record.protein_id, self.path)

    def __getitem__(self, seq_hash: str) -> np.ndarray:
        """Embedding of one chain by sequence hash, float32 [L, n_layers, D]."""
        return self._chain(seq_hash, tuple(self.layers)).astype(np.float32)

    def _chain(self, seq_hash: str, layers: tuple[int, ...]) -> np.ndarray:
        if seq_hash not in self._where:
            raise KeyError(f"{self.path}: no embedding for sequence hash {seq_hash}")
        shard, group, row = self._where[seq_hash]
        with self._lock:
            starts, per_layer = self._row_group(shard, group, layers)
        return np.stack([values[starts[row] : starts[row + 1]] for values in per_layer], axis=1)

    def _shard(self, shard: int) -> pq.ParquetFile:
        if shard not in self._files:
            path = self.path.parent / shard_name(shard, self.info.n_shards)
            meta = file_metadata(path)
            stale = [key for key in SHARED_KEYS if meta.get(key) != self.metadata.get(key)]
            if stale:
                raise ValueError(f"{path}: metadata {stale} differs from the index {self.path}; the shard was replaced")
            self._files[shard] = parquet_file(path)
        return self._files[shard]

    def _row_group(self, shard: int, group: int, layers: tuple[int, ...]) -> tuple[np.ndarray, list[np.ndarray]]:
        key = (shard, group, layers)
        if key in self._decoded:
            self._decoded.move_to_end(key)
            return self._decoded[key]
        table = self._shard(shard).read_row_group(group, columns=["length", *map(layer_column, layers)])
        starts = np.concatenate([[0], np.cumsum(table["length"].to_numpy())])
        dim = self.info.embed_dim
        per_layer = [layer_values(table[layer_column(layer)], dim) for layer in layers]
        self._decoded[key] = (starts, per_layer)
        while len(self._decoded) > 1 and sum(sum(v.nbytes for v in p) for _, p in self._decoded.values()) > self._decoded_bytes:
            self._decoded.popitem(last=False)
        return starts, per_layer
