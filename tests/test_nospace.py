"""A full disk is named at every writer: the path, about how much it needed, how much is free."""

from __future__ import annotations

import errno
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from bihmf.io import atomic_output, write_json_atomic
from bihmf.run import RunSpec, SavedModel, write_model

MESSAGE = r"no space left on device writing {} \(needs about \d+\.\d\d GB; free \d+\.\d\d GB\)"


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_in_a_checkpoint_names_the_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Path, "write_bytes", _full_disk)
    target = tmp_path / "run" / "model.pt"
    saved = SavedModel(RunSpec("d", "gvp", "token", 0, "residue_binary"), {}, {"w": torch.zeros(1000)}, 1)
    with pytest.raises(OSError, match=MESSAGE.format(target)) as caught:
        write_model(target, saved)
    assert caught.value.errno == errno.ENOSPC
    assert list(target.parent.iterdir()) == []  # no temporary left behind


def test_a_full_disk_in_a_json_writer_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Path, "write_text", _full_disk)
    with pytest.raises(OSError, match=MESSAGE.format(tmp_path / "metrics.json")):
        write_json_atomic(tmp_path / "metrics.json", {"a": 1})


def test_a_full_disk_reported_by_pyarrow_names_the_file(tmp_path: Path) -> None:
    """pyarrow reports ENOSPC in its text only (its OSError has no errno)."""
    target = tmp_path / "shard-0-of-1.parquet"
    with pytest.raises(OSError, match=MESSAGE.format(target)), atomic_output(target) as tmp:
        pq.write_table(pa.table({"x": list(range(1000))}), tmp)
        raise OSError("IOError: [Errno 28] No space left on device. Detail: [errno 28] No space left on device")


def test_other_errors_pass_unchanged(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="^permission denied$"), atomic_output(tmp_path / "x") as tmp:
        tmp.write_text("x")
        raise OSError("permission denied")
