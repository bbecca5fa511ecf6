"""The conda environment must pin exactly what requirements.txt pins (one source of truth)."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> set[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_conda_env_mirrors_requirements():
    env = yaml.safe_load((ROOT / "envs" / "bihmf.yaml").read_text())
    pip_block = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    assert set(pip_block) == _requirements()


def test_every_requirement_is_pinned_exactly():
    unpinned = [req for req in _requirements() if "==" not in req]
    assert not unpinned
