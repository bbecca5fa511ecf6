"""The checkpoint's sha256 record (bihmf.io.record_sha256): hashed once, valid after a touch."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import bihmf.io
from bihmf.io import record_sha256, recorded_sha256


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file that :func:`recorded_sha256` hashes in full."""
    seen: list[Path] = []
    real = bihmf.io.file_digest
    monkeypatch.setattr(bihmf.io, "file_digest", lambda path, algorithm: seen.append(Path(path)) or real(path, algorithm))
    return seen


def _checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "esm2.pt"
    path.write_bytes(bytes(range(256)) * 20_000)  # 5 MB: more than the sampled fingerprint reads
    return path


def test_the_record_survives_snakemakes_touch_of_the_outputs(tmp_path: Path, hashed: list[Path]) -> None:
    checkpoint = _checkpoint(tmp_path)
    digest = record_sha256(checkpoint)
    hashed.clear()
    later = checkpoint.stat().st_mtime_ns + 5_000_000_000
    os.utime(checkpoint, ns=(later, later))  # what Snakemake does to every output after the job
    assert recorded_sha256(checkpoint) == digest
    assert hashed == []


@pytest.mark.parametrize("offset", [0, 2_560_000, 5_119_999])
def test_a_real_content_change_is_still_detected(tmp_path: Path, hashed: list[Path], offset: int) -> None:
    checkpoint = _checkpoint(tmp_path)
    record_sha256(checkpoint)
    hashed.clear()
    with checkpoint.open("r+b") as handle:  # in place: same size, same inode
        handle.seek(offset)
        handle.write(bytes([offset % 256 ^ 0xFF]))  # a byte other than the one there
    os.utime(checkpoint, ns=(checkpoint.stat().st_atime_ns, checkpoint.stat().st_mtime_ns + 1))
    assert recorded_sha256(checkpoint) == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert hashed == [checkpoint]
