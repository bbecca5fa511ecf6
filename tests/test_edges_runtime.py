"""What a real run meets besides its data (issue 16): writers and jobs killed with SIGKILL,
provenance hashes across clones, truncated downloads, lint and config errors."""

from __future__ import annotations

import copy
import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bihmf.data.fetch import fetch_dataset
from bihmf.download import DownloadError
from bihmf.esm_checkpoint import regression_path, write_random_checkpoint
from bihmf.io import write_text_atomic
from bihmf import logs

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "PYTHONWARNINGS": "ignore"}


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=120)


def test_temporary_file_of_a_writer_killed_with_sigkill_goes_on_the_next_write(tmp_path):
    killed = (
        "import os, signal\nfrom bihmf.io import atomic_output\n"
        "with atomic_output('model.pt') as tmp:\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = _python(killed, tmp_path)
    assert result.returncode == -9
    stale = [p.name for p in tmp_path.iterdir()]
    assert len(stale) == 1 and stale[0].startswith(".model.pt.") and stale[0].endswith(".tmp")
    (tmp_path / ".curve.csv.abcd1234.tmp").write_text("another target's writer")
    write_text_atomic(tmp_path / "model.pt", "weights")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".curve.csv.abcd1234.tmp", "model.pt"]


def test_every_attempt_of_a_job_stays_in_its_log(tmp_path):
    """Snakemake deletes a job's log before each attempt; the earlier attempts come back."""
    log = tmp_path / "logs" / "train.log"
    first = f"from bihmf.logs import log_to\nlog_to({str(log)!r})\nraise MemoryError('attempt one ran out')\n"
    assert _python(first, tmp_path).returncode == 1
    log.unlink()  # what Snakemake does when it starts the job again
    second = f"import logging\nfrom bihmf.logs import log_to\nlog_to({str(log)!r})\nlogging.getLogger('bihmf').info('attempt two finished')\n"
    assert _python(second, tmp_path).returncode == 0
    text = log.read_text()
    headers = [line for line in text.splitlines() if line.startswith(logs.ATTEMPT_HEADER)]
    assert [h.split()[4] for h in headers] == ["1", "2"]
    assert text.index(headers[0]) < text.index("MemoryError: attempt one ran out") < text.index(headers[1]) < text.index("attempt two finished")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_random_checkpoint_has_one_sha256_in_every_folder_and_process(tmp_path):
    """Two clones running the demo config must record the same esm_checkpoint_sha256."""
    here = tmp_path / "clone_a" / "esm2_t2_demo_random.pt"
    there = tmp_path / "clone_b" / "resources" / "esm2_t2_demo_random.pt"
    write_random_checkpoint(here, num_layers=2, embed_dim=32, attention_heads=4, seed=0)
    code = (
        "from pathlib import Path\nfrom bihmf.esm_checkpoint import write_random_checkpoint\n"
        f"write_random_checkpoint(Path({str(there)!r}), num_layers=2, embed_dim=32, attention_heads=4, seed=0)\n"
    )
    assert _python(code, tmp_path).returncode == 0
    assert _sha256(here) == _sha256(there) and _sha256(regression_path(here)) == _sha256(regression_path(there))


# --------------------------------------------------------------------------- downloads


def _archive_spec(demo_spec: dict, archive: Path) -> dict:
    spec = copy.deepcopy(demo_spec)
    spec["download"] = {"archive": {"url": f"file:{archive}", "checksum": None, "name": None}, "files": []}
    return spec


@pytest.mark.parametrize("source", ["demo/ppbs_demo.tar.gz", "tests/fixtures/react_fixture.zip"])
def test_truncated_unpinned_archive_is_an_error_naming_the_file(demo_spec, tmp_path, source):
    data = (ROOT / source).read_bytes()
    archive = tmp_path / Path(source).name
    archive.write_bytes(data[: len(data) // 2])  # a download cut short; no checksum to catch it
    with pytest.raises(DownloadError, match=rf"{Path(source).name}: .*truncated.*moved it aside .*a rerun downloads it again"):
        fetch_dataset(_archive_spec(demo_spec, archive), tmp_path / "raw", tmp_path / "dl", tmp_path)
    assert not (tmp_path / "raw").exists()


def test_extracted_raw_folder_gets_the_umask_mode(demo_spec, tmp_path):
    previous = os.umask(0o022)
    try:
        fetch_dataset(_archive_spec(demo_spec, ROOT / "demo" / "ppbs_demo.tar.gz"), tmp_path / "raw", tmp_path / "dl", tmp_path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "raw").stat().st_mode) == 0o755
    assert (tmp_path / "raw" / "ppbs_demo" / "labels_train.txt").is_file()


# --------------------------------------------------------------------------- the workflow's own messages

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]


@pytest.mark.parametrize("config", [[], ["--configfile", str(ROOT / "config" / "demo.yaml")]])
def test_snakemake_lint_reports_nothing(tmp_path, config):
    result = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "--lint", *config], capture_output=True, text=True, env=ENV, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Lints for" not in output and "Congratulations" in output, output[-3000:]


def test_config_error_starts_with_the_key_and_keeps_the_schema_excerpt_in_a_file(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    config["datasets"]["ppbs_demo"]["tsk"] = "residue_binary"
    config["model"]["hidden_dim"] = "wide"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    result = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "-n", "--configfile", str(bad)], capture_output=True, text=True, env=ENV, timeout=300)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode != 0
    assert lines[0] == "invalid bihmf config: datasets/ppbs_demo: Additional properties are not allowed ('tsk' was unexpected)"
    assert lines[1] == "  model/hidden_dim: 'wide' is not of type 'integer'" and len(lines) == 3
    details = (tmp_path / "logs" / "config_errors.txt").read_text()
    assert "Failed validating 'additionalProperties'" in details and "Failed validating 'type'" in details
