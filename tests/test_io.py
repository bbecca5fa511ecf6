"""Atomic writers: nothing half-written survives a failure; results get the umask's mode."""

from __future__ import annotations

import os
import stat

import pytest

from bihmf.io import atomic_output, write_text_atomic


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_file_gets_the_mode_of_a_plain_open(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "out.txt", "x")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "out.txt").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o666 & ~umask


def test_failure_leaves_neither_target_nor_temporary_file(tmp_path):
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "out.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
