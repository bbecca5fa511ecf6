"""Shared fixtures: the real demo archive, its config, and a tiny fair-esm checkpoint."""

from __future__ import annotations

import contextlib
import functools
import http.server
import tarfile
import threading
from pathlib import Path

import pytest
import torch

import bihmf.esm_writer
from bihmf.benchmark import load_config
from bihmf.esm_checkpoint import write_random_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DEMO_ARCHIVE = ROOT / "demo" / "ppbs_demo.tar.gz"
PDB_DATA = ROOT / "tests" / "data"


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread for a module of tiny models: faster than two, and immune to a busy
    second core; the previous count is restored after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def demo_config() -> dict:
    return load_config(ROOT / "config" / "demo.yaml")


@pytest.fixture(scope="session")
def demo_spec(demo_config) -> dict:
    return demo_config["datasets"]["ppbs_demo"]


@pytest.fixture(scope="session")
def demo_raw(tmp_path_factory) -> Path:
    """The demo archive unpacked (read-only use: tests must not modify it)."""
    out = tmp_path_factory.mktemp("demo_raw")
    with tarfile.open(DEMO_ARCHIVE) as tar:
        tar.extractall(out, filter="data")
    return out


@pytest.fixture(scope="session")
def demo_structures(demo_raw) -> Path:
    return demo_raw / "ppbs_demo" / "structures"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A 4-layer, 32-dim random ESM-2 in fair-esm's checkpoint format."""
    path = tmp_path_factory.mktemp("esm") / "esm2_t4_test_random.pt"
    write_random_checkpoint(path, num_layers=4, embed_dim=32, attention_heads=4, seed=0)
    return path


@pytest.fixture(scope="session")
def lba_records(tmp_path_factory):
    """Protein-ligand complexes of the LBA fixture (real structures), parsed."""
    from bihmf.benchmark import validate_config
    from bihmf.data import lba

    raw = tmp_path_factory.mktemp("lba_raw")
    with tarfile.open(ROOT / "tests" / "fixtures" / "lba_fixture.tar.gz") as tar:
        tar.extractall(raw, filter="data")
    config = validate_config(
        {"datasets": {"lba": {"kind": "lba", "task": "graph_regression", "download": {}, "graph_residues": "pocket"}}}
    )
    records, _ = lba.parse(raw, config["datasets"]["lba"])
    return records


@pytest.fixture()
def http_root(tmp_path):
    """Serve a folder on 127.0.0.1, standing in for GitHub raw, Zenodo, Drive or RCSB."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture()
def killed_at_embed_call(monkeypatch):
    """``with killed_at_embed_call(n): <embed job>``: the job's forward pass dies on its n-th
    call, as a job killed mid-shard; the block expects that death, and the real forward is back after it."""

    @contextlib.contextmanager
    def killed(n: int):
        real, calls = bihmf.esm_writer.embed_sequences, []

        def dies_on_nth_call(*args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                raise RuntimeError("killed")
            return real(*args, **kwargs)

        monkeypatch.setattr(bihmf.esm_writer, "embed_sequences", dies_on_nth_call)
        try:
            with pytest.raises(RuntimeError, match="killed"):
                yield
        finally:
            monkeypatch.setattr(bihmf.esm_writer, "embed_sequences", real)

    return killed
