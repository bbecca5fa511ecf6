"""The download stage for a dataset: demo archive over loopback HTTP, per-entry structures."""

from __future__ import annotations

import copy
import functools
import http.server
import json
import logging
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import bihmf.data.fetch
from bihmf.cli import main as bihmf_main
from bihmf.data import preprocess_dataset
from bihmf.data.fetch import fetch_dataset, fetch_structures
from bihmf.data.manifest import structure_drop_reasons
from bihmf.data.scannet import structure_ids
from bihmf.download import ChecksumError, DownloadError, TransientError
from bihmf.lock import LockDriftError

from conftest import DEMO_ARCHIVE

ROOT = Path(__file__).resolve().parents[1]
RCSB = "https://files.rcsb.org/download"


class _Upstream(http.server.SimpleHTTPRequestHandler):
    """A folder served over HTTP/1.1 keep-alive as the hosts behind BIHMF_UPSTREAM_BASE; a path in
    ``server.faults`` answers that status instead (a 503 burst, a 429 rate limit)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        with self.server.lock:
            self.server.requests.append((self.path, self.client_address[1]))
        status = self.server.faults.get(self.path.partition("?")[0])
        if status is None:
            super().do_GET()
            return
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def upstream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, http.server.ThreadingHTTPServer]]:
    """Loopback stand-in for RCSB and the other hosts: files under ``root/<host>/<path>``."""
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Upstream, directory=str(root)))
    server.daemon_threads = True
    server.faults, server.requests, server.lock = {}, [], threading.Lock()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    monkeypatch.setenv("BIHMF_UPSTREAM_BASE", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setattr(bihmf.data.fetch, "STRUCTURE_BACKOFF_S", 0.01)
    yield root, server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _serve(root: Path, url: str, body: bytes) -> None:
    path = root / url.removeprefix("https://")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)


def _structure_spec(max_missing_fraction: float = 0.5) -> dict:
    return {"url_templates": [f"{RCSB}/{{ID}}.pdb1.gz", f"{RCSB}/{{ID}}-assembly1.cif.gz"], "max_workers": 2,
            "max_missing_fraction": max_missing_fraction}




def _archive_spec(demo_spec, url, checksum):
    spec = copy.deepcopy(demo_spec)
    spec["download"] = {"archive": {"url": url, "checksum": checksum, "name": None}, "files": []}
    return spec


def test_demo_archive_over_http_then_preprocess(http_root, demo_spec, tmp_path):
    root, base = http_root
    (root / "ppbs_demo.tar.gz").write_bytes(DEMO_ARCHIVE.read_bytes())
    raw = tmp_path / "raw"
    fetch_dataset(_archive_spec(demo_spec, f"{base}/ppbs_demo.tar.gz", demo_spec["download"]["archive"]["checksum"]), raw, tmp_path / "dl", tmp_path)
    assert (raw / "ppbs_demo" / "labels_train.txt").exists()
    summary = preprocess_dataset(raw, demo_spec, tmp_path / "p.parquet", tmp_path / "r.tsv")
    assert summary["kept"] == 18


def test_checksum_mismatch_fails_cleanly(http_root, demo_spec, tmp_path):
    root, base = http_root
    (root / "ppbs_demo.tar.gz").write_bytes(DEMO_ARCHIVE.read_bytes())
    raw = tmp_path / "raw"
    with pytest.raises(ChecksumError, match="ppbs_demo.tar.gz"):
        fetch_dataset(_archive_spec(demo_spec, f"{base}/ppbs_demo.tar.gz", "sha256:" + "0" * 64), raw, tmp_path / "dl", tmp_path)
    assert not raw.exists()
    left = [path.name for path in (tmp_path / "dl").rglob("*") if path.is_file()]
    assert left == ["ppbs_demo.tar.gz.lock"]  # no partial or unverified file, only the entry's lock


def test_relative_file_url_resolves_against_the_workflow(demo_spec, tmp_path):
    raw = tmp_path / "raw"
    fetch_dataset(demo_spec, raw, tmp_path / "dl", DEMO_ARCHIVE.parents[1])
    assert (raw / "ppbs_demo" / "table.csv").exists()


def test_structures_fetched_with_fallback_and_missing_entries_listed(upstream, demo_structures, tmp_path):
    root, _server = upstream
    _serve(root, f"{RCSB}/1HVR.pdb1.gz", (demo_structures / "1hvr.pdb1.gz").read_bytes())
    _serve(root, f"{RCSB}/3PWP-assembly1.cif.gz", (demo_structures / "3pwp-assembly1.cif.gz").read_bytes())
    out = tmp_path / "structures"
    rows = fetch_structures(["1hvr", "3pwp", "9zzz"], _structure_spec(), tmp_path / "cache", out)
    status = {row["id"]: (row["status"], row["file"]) for row in rows}
    assert status == {"1hvr": ("ok", "1HVR.pdb1.gz"), "3pwp": ("ok", "3PWP-assembly1.cif.gz"), "9zzz": ("missing", "")}
    assert (out / "1HVR.pdb1.gz").read_bytes() == (demo_structures / "1hvr.pdb1.gz").read_bytes()
    manifest = (out / "structures_manifest.tsv").read_text()
    assert "9zzz\tmissing" in manifest and "404" in manifest
    with pytest.raises(DownloadError, match=r"1 of 3 structures could not be fetched .* see .*structures_manifest.tsv"):
        fetch_structures(["1hvr", "3pwp", "9zzz"], _structure_spec(0.2), tmp_path / "cache", tmp_path / "s2")
    assert "9zzz\tmissing" in (tmp_path / "s2" / "structures_manifest.tsv").read_text()


# --------------------------------------------------------------------------- issue 23 fixes


def _files_spec(*urls: str) -> dict:
    return {"download": {"files": [{"url": url, "checksum": None, "name": None} for url in urls]}}


def test_two_sources_with_one_file_name_never_share_a_cache_entry(upstream, tmp_path):
    """PPBS and BCE both download a table.csv: each dataset must get its own."""
    root, _server = upstream
    _serve(root, "https://github.test/PPBS/table.csv", b"ppbs table\n")
    _serve(root, "https://github.test/BCE/table.csv", b"bce table\n")
    downloads = tmp_path / "downloads"
    fetch_dataset(_files_spec("https://github.test/PPBS/table.csv"), tmp_path / "ppbs", downloads, tmp_path)
    fetch_dataset(_files_spec("https://github.test/BCE/table.csv"), tmp_path / "bce", downloads, tmp_path)
    assert (tmp_path / "ppbs" / "table.csv").read_bytes() == b"ppbs table\n"
    assert (tmp_path / "bce" / "table.csv").read_bytes() == b"bce table\n"


def test_an_html_page_for_an_archive_is_never_cached_and_the_rerun_asks_again(upstream, demo_spec, tmp_path):
    root, server = upstream
    url = "https://zenodo.test/records/1/files/ppbs_demo.tar.gz"
    _serve(root, url, b"<!DOCTYPE html><html><body>Down for maintenance</body></html>")
    spec = _archive_spec(demo_spec, url, None)
    with pytest.raises(TransientError, match="HTML page instead of ppbs_demo.tar.gz"):
        fetch_dataset(spec, tmp_path / "raw", tmp_path / "dl", tmp_path)
    assert [path.name for path in (tmp_path / "dl").rglob("*") if path.is_file()] == ["ppbs_demo.tar.gz.lock"]
    _serve(root, url, DEMO_ARCHIVE.read_bytes())  # maintenance over
    fetch_dataset(spec, tmp_path / "raw", tmp_path / "dl", tmp_path)
    assert (tmp_path / "raw" / "ppbs_demo" / "labels_train.txt").exists()


def test_an_unpinned_file_that_fails_extraction_is_moved_aside_and_fetched_again(upstream, demo_spec, tmp_path):
    root, _server = upstream
    url = "https://zenodo.test/records/1/files/ppbs_demo.tar.gz"
    data = DEMO_ARCHIVE.read_bytes()
    _serve(root, url, data[: len(data) // 2])  # cut short, and nothing pinned to notice
    spec = _archive_spec(demo_spec, url, None)
    with pytest.raises(DownloadError, match=r"truncated.*moved it aside to .*rejected-.*a rerun downloads it again"):
        fetch_dataset(spec, tmp_path / "raw", tmp_path / "dl", tmp_path)
    _serve(root, url, data)
    fetch_dataset(spec, tmp_path / "raw", tmp_path / "dl", tmp_path)
    assert (tmp_path / "raw" / "ppbs_demo" / "table.csv").exists()


@pytest.mark.parametrize("body", [b"", b"<html><head><title>503</title></head></html>"])
def test_an_empty_or_html_structure_body_is_never_ok(upstream, tmp_path, body):
    root, _server = upstream
    _serve(root, f"{RCSB}/1ABC.pdb1.gz", body)
    _serve(root, f"{RCSB}/1ABC-assembly1.cif.gz", body)
    with pytest.raises(TransientError, match="1 of 1 structures failed transiently"):
        fetch_structures(["1abc"], _structure_spec(1.0), tmp_path / "cache", tmp_path / "s")
    row = (tmp_path / "s" / "structures_manifest.tsv").read_text().splitlines()[1].split("\t")
    assert row[:2] == ["1abc", "transient"]
    assert not (tmp_path / "s" / "1ABC.pdb1.gz").exists()


def test_transient_structure_failures_are_retried_on_the_next_run_not_frozen(upstream, demo_structures, tmp_path):
    """A 503 burst within the 2 % allowance used to be dropped for good as 'missing'."""
    root, server = upstream
    for pdb_id in ("1HVR", "3PWP"):
        _serve(root, f"{RCSB}/{pdb_id}.pdb1.gz", (demo_structures / "1hvr.pdb1.gz").read_bytes())
    server.faults = {"/files.rcsb.org/download/3PWP.pdb1.gz": 503, "/files.rcsb.org/download/3PWP-assembly1.cif.gz": 429}
    with pytest.raises(TransientError, match=r"1 of 2 structures failed transiently .*3pwp.*503"):
        fetch_structures(["1hvr", "3pwp"], _structure_spec(0.5), tmp_path / "cache", tmp_path / "s")
    assert "3pwp\ttransient" in (tmp_path / "s" / "structures_manifest.tsv").read_text()
    server.faults = {}
    before = len(server.requests)
    rows = fetch_structures(["1hvr", "3pwp"], _structure_spec(0.5), tmp_path / "cache", tmp_path / "s2")
    assert [row["status"] for row in rows] == ["ok", "ok"]
    assert [path for path, _port in server.requests[before:]] == ["/files.rcsb.org/download/3PWP.pdb1.gz"]  # 1hvr cached


def test_an_obsolete_entry_is_mapped_to_its_successor_and_the_drop_names_it(upstream, tmp_path):
    root, _server = upstream
    holdings = {"rcsb_id": "1ABC", "rcsb_repository_holdings_removed": {
        "status_code": "OBS", "remove_date": "2015-03-04T00:00:00+0000", "id_codes_replaced_by": ["4XYZ"]}}
    _serve(root, "https://data.rcsb.org/rest/v1/holdings/removed/1ABC", json.dumps(holdings).encode())
    rows = fetch_structures(["1abc", "9zzz"], _structure_spec(1.0), tmp_path / "cache", tmp_path / "s")
    by_id = {row["id"]: row for row in rows}
    assert (by_id["1abc"]["status"], by_id["1abc"]["successor"]) == ("obsolete", "4XYZ")
    assert "replaced by 4XYZ" in by_id["1abc"]["error"] and "2015-03-04" in by_id["1abc"]["error"]
    assert by_id["9zzz"]["status"] == "missing"
    reasons = structure_drop_reasons(tmp_path / "s")
    assert "obsolete PDB entry 1ABC" in reasons["1ABC"] and "replaced by 4XYZ" in reasons["1ABC"]
    assert reasons["9ZZZ"].startswith("missing PDB entry 9ZZZ")


def test_one_session_pools_the_connections_of_a_whole_structure_download(upstream, demo_structures, tmp_path, caplog):
    root, server = upstream
    ids = [f"{n}ABC" for n in range(1, 9)]
    for pdb_id in ids:
        _serve(root, f"{RCSB}/{pdb_id}.pdb1.gz", (demo_structures / "1hvr.pdb1.gz").read_bytes())
    with caplog.at_level(logging.INFO):
        fetch_structures(ids, _structure_spec(), tmp_path / "cache", tmp_path / "s")
    ports = {port for _path, port in server.requests}
    assert len(server.requests) == 8 and len(ports) <= 2  # max_workers kept-alive connections, not one per file
    assert "no checksum configured" not in caplog.text  # one summary line instead of 8 pin hints (17k at full size)
    assert "8 of 8 structures fetched; their sha256 are in" in caplog.text


def test_one_malformed_label_header_drops_one_entry_not_the_download(tmp_path, caplog):
    (tmp_path / "labels_train.txt").write_text(">1abc_0-A\nA 1 M 0\n>not-an-origin\nA 1 M 1\n>2xyz_0-B\nB 5 K 1\n")
    spec = {"label_files": [{"file": "labels_train.txt"}]}
    assert structure_ids(tmp_path, spec) == ["1abc", "2xyz"]
    assert "labels_train.txt:3: entry skipped" in caplog.text


def test_zenodo_urls_use_the_current_records_path():
    config = (ROOT / "config.yaml").read_text()
    assert "zenodo.org/records/" in config and "zenodo.org/record/" not in config


def test_lock_records_what_the_first_run_saw_and_names_every_file_that_drifts(upstream, tmp_path, monkeypatch, capsys):
    root, _server = upstream
    urls = ["https://github.test/PPBS/table.csv", "https://github.test/PPBS/labels_train.txt"]
    for url in urls:
        _serve(root, url, f"{url}\n".encode())
    downloads, lock_file = tmp_path / "downloads", tmp_path / "bihmf.lock.yaml"
    fetch = functools.partial(fetch_dataset, _files_spec(*urls), tmp_path / "raw", downloads, tmp_path, dataset="ppbs", lock_file=lock_file)
    fetch()  # first run: no lock yet
    assert bihmf_main(["lock", "--downloads", str(downloads), "--lock", str(lock_file)]) == 0
    locked = yaml.safe_load(lock_file.read_text())
    assert locked["version"] == 1 and set(locked["datasets"]["ppbs"]) == set(urls)
    assert "locked 2 files of 1 datasets" in capsys.readouterr().out

    _serve(root, urls[0], b"changed upstream\n")
    for path in downloads.rglob("table.csv"):  # a fresh machine: nothing cached
        path.unlink()
    (tmp_path / "raw").rename(tmp_path / "raw.old")
    with pytest.raises(LockDriftError, match=r"1 files of dataset ppbs differ from .*bihmf.lock.yaml:\n  https://github.test/PPBS/table.csv: locked sha256:"):
        fetch()
    assert not (tmp_path / "raw").exists()
    assert bihmf_main(["lock", "--downloads", str(downloads), "--lock", str(lock_file)]) == 0  # accept the change
    fetch()
    assert (tmp_path / "raw" / "table.csv").read_bytes() == b"changed upstream\n"


def test_preprocess_drops_an_obsolete_entry_with_the_reason_from_the_download(demo_raw, demo_spec, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(demo_raw, raw)
    structures = raw / demo_spec["structure_dir"]
    (structures / "19hc.pdb1.gz").unlink()
    (structures / "structures_manifest.tsv").write_text(
        "id\tstatus\tfile\turl\tsha256\tsuccessor\terror\n"
        "19hc\tobsolete\t\t\t\t9XYZ\tremoved from the PDB on 2020-01-01; replaced by 9XYZ\n"
    )
    preprocess_dataset(raw, demo_spec, tmp_path / "p.parquet", tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    reasons = {entry["reason"] for entry in report["noteworthy_entries"] if entry["protein_id"].startswith("19hc")}
    assert reasons == {"obsolete PDB entry 19HC: removed from the PDB on 2020-01-01; replaced by 9XYZ"}
