"""Building the package says nothing: no deprecated metadata (setuptools' license table)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = "import sys; from setuptools import build_meta; print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))"


def test_package_metadata_builds_without_warnings(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-W", "always", "-c", BUILD, str(tmp_path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    metadata = (tmp_path / result.stdout.split()[-1] / "METADATA").read_text()
    assert "License-Expression: MIT" in metadata
