"""The cache's on-disk format: format 2 (one fixed-size binary value per residue and layer)
reads back the exact float16 numbers written, caches of format 1 (one float16 value per number)
still read, and any other format is refused with the fix named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from bihmf.data.schema import sequence_hash
from bihmf.esm_cache import (
    FORMAT,
    EmbeddingCache,
    cache_schema,
    embedding_table,
    shard_name,
    shard_writer,
    write_index,
    write_row_group,
)
from bihmf.integrity import WRITE_OPTIONS
from tests.conftest import ROOT
from tests.test_esm import _record

LAYERS, WIDTH = [2, 4, 6], 24
SEQUENCES = ["MKTAYIAKQR", "GSHMLE", "ACDEFGHIKLMNPQRSTVWY" * 3]


def _rows(seed: int) -> list[np.ndarray]:
    """float16 [L, layers, D] per chain, with the values a cast can get wrong: signed zeros,
    subnormals, the largest finite float16, one float16 step apart."""
    rng = np.random.default_rng(seed)
    rows = [rng.normal(0, 3, (len(s), len(LAYERS), WIDTH)).astype(np.float16) for s in SEQUENCES]
    rows[0][0, 0, :5] = np.array([-0.0, 0.0, 6e-8, -65504, 65504], np.float16)
    rows[1][1, 2, :2] = np.array([1.0, np.nextafter(np.float16(1), np.float16(2))], np.float16)
    return rows


def _records(sequences: list[str]):
    return [_record(f"p{i}", [("A", seq)]) for i, seq in enumerate(sequences)]


def _metadata(fmt: str) -> dict[str, str]:
    """A cache's metadata as its format's writer recorded it (format 1 predates esm.precision)."""
    return {
        "format": fmt, "checkpoint": "c.pt", "checkpoint_sha256": "0" * 64, "embed_dim": str(WIDTH), "esm_depth": "6",
        "layers": json.dumps(LAYERS), "dtype": "float16", "window": "1022", "window_overlap": "256", "shard": "0", "n_shards": "1",
        **({"precision": "float32"} if fmt == FORMAT else {}),
    }


def _write_format2(folder: Path, rows: list[np.ndarray]) -> Path:
    """A cache through the writer functions the embed jobs use (one chain per row group)."""
    keys = [sequence_hash(s) for s in SEQUENCES]
    shard = folder / shard_name(0, 1)
    schema = cache_schema(LAYERS, WIDTH, _metadata(FORMAT))
    folder.mkdir()
    with shard_writer(shard, schema) as writer:
        for key, chain in zip(keys, rows, strict=True):
            write_row_group(writer, embedding_table(schema, [key], [chain]))
    write_index(folder / "index.parquet", [shard], keys)
    return folder / "index.parquet"


def _write_format1(folder: Path, rows: list[np.ndarray], monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache as the writer before format 2 wrote it (its schema, rows and settings)."""
    monkeypatch.syspath_prepend(str(ROOT))
    from bench.cache_writer import FORMAT_1, format1_schema, format1_table  # noqa: PLC0415 - bench/ sits beside the package

    keys = [sequence_hash(s) for s in SEQUENCES]
    shard = folder / shard_name(0, 1)
    schema = format1_schema(LAYERS, WIDTH, _metadata(FORMAT_1))
    leaves = [f"{name}.list.element.list.element" for name in schema.names[2:]]
    folder.mkdir()
    with pq.ParquetWriter(shard, schema, compression="zstd", use_dictionary=False, write_statistics=["seq_hash", "length"],
                          use_byte_stream_split=leaves, **WRITE_OPTIONS) as writer:
        writer.write_table(format1_table(schema, keys[:2], rows[:2]))
        writer.write_table(format1_table(schema, keys[2:], rows[2:]))
    write_index(folder / "index.parquet", [shard], keys)
    return folder / "index.parquet"


def _assert_same_bits(cache: EmbeddingCache, rows: list[np.ndarray]) -> None:
    for record, chain in zip(_records(SEQUENCES), rows, strict=True):
        np.testing.assert_array_equal(cache.rows(record).view(np.uint16), chain.view(np.uint16))
        np.testing.assert_array_equal(cache.rows(record, [6, 2]).view(np.uint16), chain[:, [2, 0]].view(np.uint16))
        np.testing.assert_array_equal(cache[sequence_hash(record.sequence)], chain.astype(np.float32))


def test_format2_stores_one_value_per_residue_and_reads_back_every_bit(tmp_path):
    rows = _rows(0)
    cache = EmbeddingCache(_write_format2(tmp_path / "cache", rows))
    assert cache.metadata["format"] == FORMAT == "bihmf-esm-cache/2"
    column = pq.ParquetFile(tmp_path / "cache" / shard_name(0, 1)).metadata.row_group(0).column(2)
    assert (column.physical_type, column.num_values) == ("FIXED_LEN_BYTE_ARRAY", len(SEQUENCES[0]))
    _assert_same_bits(cache, rows)
    schema = cache_schema(LAYERS, WIDTH, _metadata(FORMAT))
    with pytest.raises(TypeError, match=r"stores float16 embeddings, got \[.float32.\]"):  # never reinterpreted as twice the residues
        embedding_table(schema, ["k"], [rows[0].astype(np.float32)])



def test_format2_footers_hold_the_cache_metadata_and_nothing_unread(tmp_path):
    """At esm2_t33 width a row group holds ~270 residues, so per-row-group footer bytes are most
    of the overhead that decides bytes per residue against extract.py (BENCHMARKS.md, section 10)."""
    rows = _rows(2)
    cache = EmbeddingCache(_write_format2(tmp_path / "cache", rows))
    footer = pq.read_metadata(tmp_path / "cache" / shard_name(0, 1))
    assert footer.num_row_groups == len(SEQUENCES)
    chunks = [footer.row_group(g).column(c) for g in range(footer.num_row_groups) for c in range(footer.num_columns)]
    assert [chunk.path_in_schema for chunk in chunks if chunk.is_stats_set] == []
    assert b"ARROW:schema" not in footer.metadata
    assert {k.decode(): v.decode() for k, v in footer.metadata.items()} == _metadata(FORMAT)
    _assert_same_bits(cache, rows)


def test_a_format2_cache_with_the_arrow_schema_and_key_statistics_still_reads(tmp_path):
    """Format-2 shards written before the footer was trimmed (2026-12-08) carry both."""
    rows = _rows(3)
    keys = [sequence_hash(s) for s in SEQUENCES]
    shard = tmp_path / "cache" / shard_name(0, 1)
    schema = cache_schema(LAYERS, WIDTH, _metadata(FORMAT))
    shard.parent.mkdir()
    with pq.ParquetWriter(shard, schema, compression="none", use_dictionary=False, write_statistics=["seq_hash", "length"], **WRITE_OPTIONS) as writer:
        write_row_group(writer, embedding_table(schema, keys, rows))
    write_index(tmp_path / "cache" / "index.parquet", [shard], keys)
    _assert_same_bits(EmbeddingCache(tmp_path / "cache" / "index.parquet"), rows)

def test_a_format1_cache_still_reads_the_same_numbers(tmp_path, monkeypatch):
    rows = _rows(1)
    old = EmbeddingCache(_write_format1(tmp_path / "old", rows, monkeypatch))
    assert old.metadata["format"] == "bihmf-esm-cache/1"
    _assert_same_bits(old, rows)
    new = EmbeddingCache(_write_format2(tmp_path / "new", rows))
    for record in _records(SEQUENCES):
        np.testing.assert_array_equal(old.rows(record).view(np.uint16), new.rows(record).view(np.uint16))


def test_an_unknown_format_is_refused_naming_the_fix(tmp_path):
    index = _write_format2(tmp_path / "cache", _rows(2))
    table = pq.read_table(index)
    pq.write_table(table.replace_schema_metadata({**_metadata("bihmf-esm-cache/9"), "shard": "0"}), index)
    with pytest.raises(ValueError, match=r"cache format 'bihmf-esm-cache/9' is not one this bihmf reads .*delete .*cache and re-run the embed stage"):
        EmbeddingCache(index)
