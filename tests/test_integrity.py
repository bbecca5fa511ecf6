"""Damage is named, never used: byte flips in a shard or a protein table (size and mtime kept),
a truncated shard, and values no structure or model can produce."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from bihmf.data.schema import ProteinRecord, read_proteins, write_proteins
from bihmf.esm_cache import EmbedSettings, EmbeddingCache, read_chains, shard_name, write_index
from bihmf.esm_writer import embed_shard
from bihmf.integrity import DamagedFile, OutOfRange, check_inputs

SETTINGS = EmbedSettings(token_budget=512, window=1022, window_overlap=256)
SEQUENCES = ("ACDEFGHIKLMNPQRSTVWY" * 3, "MKVLAAGIIGLLAWSSHA" * 2, "GSSGSSGPQRTEWLLKA" * 4)


def _record(index: int, sequence: str) -> ProteinRecord:
    n = len(sequence)
    rng = np.random.default_rng(index)
    return ProteinRecord(
        protein_id=f"prot{index}", pdb_id="1abc", split="train", subset="", sequence=sequence, chain_ids=("A",) * n,
        resnums=np.arange(n, dtype=np.int32), icodes=("",) * n, coords=rng.normal(0, 20, (n, 5, 3)).astype(np.float32),
        labels=(rng.random(n) < 0.3).astype(np.int8), weight=1.0,
    )


RECORDS = [_record(i, s) for i, s in enumerate(SEQUENCES)]


def _flip(path: Path, column: int, count: int) -> None:
    """Invert ``count`` bytes at the end of one column chunk of row group 0 (inside its values, past
    the page header), keeping size and mtime."""
    chunk = pq.read_metadata(path).row_group(0).column(column)
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    middle = start + chunk.total_compressed_size - count - 4
    stat = path.stat()
    data = bytearray(path.read_bytes())
    for i in range(middle, middle + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns


@pytest.fixture()
def workflow(tmp_path: Path, tiny_checkpoint: Path) -> Path:
    """A dataset's protein table and a one-shard ESM cache where the workflow puts them."""
    proteins = tmp_path / "results/data/d/proteins.parquet"
    proteins.parent.mkdir(parents=True)
    write_proteins(RECORDS, proteins)
    cache = tmp_path / "results/embeddings/d/esm2_t4_test_random"
    cache.mkdir(parents=True)
    shard = cache / shard_name(0, 1)
    embed_shard(tiny_checkpoint, proteins, [2, 4], 0, 1, shard, SETTINGS, device=torch.device("cpu"))
    write_index(cache / "index.parquet", [shard], read_chains(proteins))
    return tmp_path


def test_byte_flips_inside_a_shard_are_named_with_the_rule_that_rebuilds_it(workflow: Path) -> None:
    shard = workflow / "results/embeddings/d/esm2_t4_test_random/shard-0-of-1.parquet"
    _flip(shard, column=2, count=48)  # inside the first cached layer's float16 values
    cache = EmbeddingCache(shard.parent / "index.parquet")
    with pytest.raises(DamagedFile, match=rf"^{shard}: damaged or unreadable \(.*checksum.*\);.*rule embed"):
        for record in RECORDS:
            cache.rows(record)


def test_byte_flips_inside_a_protein_table_are_named(workflow: Path) -> None:
    proteins = workflow / "results/data/d/proteins.parquet"
    _flip(proteins, column=9, count=16)  # coords
    with pytest.raises(DamagedFile, match=rf"^{proteins}: damaged or unreadable .*rule preprocess"):
        read_proteins(proteins)


def test_a_truncated_shard_is_named(workflow: Path) -> None:
    shard = workflow / "results/embeddings/d/esm2_t4_test_random/shard-0-of-1.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    cache = EmbeddingCache(shard.parent / "index.parquet")
    with pytest.raises(DamagedFile, match=rf"^{shard}: damaged or unreadable \(Parquet magic bytes"):
        cache.rows(RECORDS[0])


def test_an_impossible_coordinate_is_refused_with_the_protein(tmp_path: Path) -> None:
    bad = RECORDS[1].coords.copy()
    bad[3, 1, 2] = -6e23
    proteins = tmp_path / "proteins.parquet"
    write_proteins([RECORDS[0], _replace_coords(RECORDS[1], bad)], proteins)
    with pytest.raises(OutOfRange, match=rf"^{proteins}: protein prot1: 1 coords value\(s\) not a coordinate"):
        read_proteins(proteins)


def _replace_coords(record: ProteinRecord, coords: np.ndarray) -> ProteinRecord:
    return ProteinRecord(**{**record.__dict__, "coords": coords})


def test_missing_atoms_pass_and_infinite_embeddings_do_not() -> None:
    coords = RECORDS[0].coords.copy()
    coords[0, 4] = np.nan  # a glycine's CB: missing, not wrong
    record = _replace_coords(RECORDS[0], coords)
    rows = np.zeros((len(record.sequence), 2, 8), np.float16)
    check_inputs([record], [rows], "input.pdb")
    rows[5, 1, 3] = np.inf
    with pytest.raises(OutOfRange, match="^input.pdb: protein prot0: 1 ESM embedding value"):
        check_inputs([record], [rows], "input.pdb")


def test_check_lists_damage_and_remove_deletes_only_it(workflow: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bihmf.cli import main

    shard = workflow / "results/embeddings/d/esm2_t4_test_random/shard-0-of-1.parquet"
    assert main(["check", "--root", str(workflow)]) == 0
    _flip(shard, column=2, count=48)
    assert main(["check", "--root", str(workflow)]) == 1
    out = capsys.readouterr().out
    assert f"DAMAGED {shard} (rebuilt by rule embed): could not verify page integrity, CRC checksum" in out
    assert "3 files checked" in out and "1 damaged" in out
    assert main(["check", "--root", str(workflow), "--remove"]) == 0
    assert not shard.exists() and (shard.parent / "index.parquet").exists()
    assert (workflow / "results/data/d/proteins.parquet").exists()


def test_a_truncated_checkpoint_is_named(tmp_path: Path) -> None:
    from bihmf.integrity import load_checkpoint
    from bihmf.io import write_torch_atomic

    last = tmp_path / "results/runs/d/gvp/token/seed0/last.pt"
    write_torch_atomic(last, {"model": {"w": torch.zeros(100)}})
    last.write_bytes(last.read_bytes()[:200])
    with pytest.raises(DamagedFile, match=rf"^{last}: damaged or unreadable \(.*\);.*rule train"):
        load_checkpoint(last)
