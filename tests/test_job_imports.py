"""The embed and index jobs pay only for the imports they use.

Every job is a fresh process, so its imports are part of what a user's run pays per job
(BENCHMARKS.md, section 1). Reading the protein table's schema used to import the whole
dataset registry, and with it every parser (pandas among them), in both jobs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARSERS = ["pandas", "bihmf.data.lba", "bihmf.data.react", "bihmf.data.psr", "torch_geometric", "bihmf.models"]


def loaded_after(*modules: str) -> list[str]:
    """Which of PARSERS a fresh interpreter holds after importing ``modules``."""
    code = f"import json, sys; import {', '.join(modules)}; print(json.dumps([m for m in {PARSERS!r} if m in sys.modules]))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_embed_and_index_jobs_do_not_import_the_dataset_parsers():
    assert loaded_after("bihmf.esm_cache", "bihmf.logs") == []  # workflow_scripts/embed_index.py
    assert loaded_after("bihmf.esm", "bihmf.esm_cache", "bihmf.gpu", "bihmf.logs") == []  # workflow_scripts/embed.py


def test_the_registry_still_lists_every_parser():
    import bihmf.data

    assert sorted(bihmf.data.DATASETS) == sorted(bihmf.data.KINDS)
    assert all(module.__name__ == f"bihmf.data.{kind}" for kind, module in bihmf.data.DATASETS.items())
