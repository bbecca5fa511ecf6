"""The download code against the upstream simulator: the real config's URLs through BIHMF_UPSTREAM_BASE.

Each test but the first is a defect of issue 23 seen failing on the code before its fix (obsolete
ids reported as plain 404s, a 503 outage or an empty body frozen into raw/ or recorded ok, Range
sent to Drive's confirmation page, an HTML maintenance page cached as an archive, Retry-After
ignored).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
from pathlib import Path

import pytest
import yaml

from bihmf.benchmark import validate_config
from bihmf.data import fetch
from bihmf.data.fetch import fetch_dataset
from bihmf.download import UPSTREAM_BASE_ENV, DownloadError, download_file
from tests.upstream import Behaviour, Catalogue, UpstreamServer
from tests.upstream.datasets import url_key

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())
DRIVE_URL = CONFIG["datasets"]["react"]["download"]["archive"]["url"]
LBA30_URL = CONFIG["datasets"]["lba30"]["download"]["archive"]["url"]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Catalogue:
    """react, lba30 and bce at a few entries; a fifth of the BCE ids obsolete, a tenth missing."""
    config = {"datasets": {name: CONFIG["datasets"][name] for name in ("react", "lba30", "bce")}}
    return Catalogue(config, tmp_path_factory.mktemp("upstream"), fraction=0.01, obsolete_share=0.2, missing_share=0.1)


def bce_spec(catalogue: Catalogue) -> dict:
    """config.yaml's bce, validated, with the synthesised files pinned to what is served."""
    config = copy.deepcopy(CONFIG)
    config["datasets"] = {"bce": config["datasets"]["bce"]}
    for remote in config["datasets"]["bce"]["download"]["files"]:
        remote["checksum"] = "sha256:" + hashlib.sha256(catalogue.text(remote["url"])).hexdigest()
    config["datasets"]["bce"]["download"]["structures"]["max_missing_fraction"] = 0.5
    return validate_config(config)["datasets"]["bce"]


def manifest(raw: Path) -> dict[str, dict[str, str]]:
    rows = csv.DictReader(io.StringIO((raw / "structures" / "structures_manifest.tsv").read_text()), delimiter="\t")
    return {row["id"].lower(): row for row in rows}


def fetch_bce(catalogue: Catalogue, behaviours: tuple[Behaviour, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, UpstreamServer]:
    with UpstreamServer(catalogue, behaviours) as up:
        monkeypatch.setenv(UPSTREAM_BASE_ENV, up.base_url)
        raw = tmp_path / "raw"
        fetch_dataset(bce_spec(catalogue), raw, tmp_path / "downloads", ROOT)
    return raw, up


def test_bce_downloads_through_the_override_byte_identical(catalogue: Catalogue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw, up = fetch_bce(catalogue, (), tmp_path, monkeypatch)
    for remote in CONFIG["datasets"]["bce"]["download"]["files"]:
        assert (raw / Path(url_key(remote["url"])).name).read_bytes() == catalogue.text(remote["url"])
    rows = manifest(raw)
    delivered = [row for row in rows.values() if row["status"] == "ok"]
    assert delivered and all((raw / "structures" / row["file"]).read_bytes() == catalogue.structure(row["file"]) for row in delivered)
    assert {i for i, row in rows.items() if row["status"] != "ok"} >= catalogue.drops.missing
    assert all(r.route.split("/")[0] in {"raw.githubusercontent.com", "files.rcsb.org", "data.rcsb.org"} for r in up.requests)


def test_obsolete_ids_name_their_successor(catalogue: Catalogue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw, _ = fetch_bce(catalogue, (), tmp_path, monkeypatch)
    rows = manifest(raw)
    for old, successor in catalogue.drops.obsolete.items():
        assert rows[old]["status"] == "obsolete" and successor in " ".join(rows[old].values()).lower(), rows[old]
    for gone in catalogue.drops.missing:
        assert rows[gone]["status"] == "missing"


@pytest.mark.parametrize("kind", ["unavailable", "empty"])
def test_a_structure_failing_for_a_whole_run_is_transient_and_fetched_by_the_rerun(
    kind: str, catalogue: Catalogue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """503 or an empty 200 body on every attempt of the first run: never recorded ok, never frozen
    into raw/ (the job fails, naming it transient, unlike a 404); the plain rerun delivers it."""
    down = next(i for i in catalogue.structure_ids["bce"] if i not in catalogue.drops.missing and i not in catalogue.drops.obsolete)
    monkeypatch.setattr(fetch, "STRUCTURE_BACKOFF_S", 0.01)
    outage = (Behaviour(kind, f"files.rcsb.org/download/{down.upper()}*", times=fetch.STRUCTURE_RETRIES),)  # one run's attempts
    with UpstreamServer(catalogue, outage) as up:
        monkeypatch.setenv(UPSTREAM_BASE_ENV, up.base_url)
        with pytest.raises(DownloadError, match="transient"):
            fetch_dataset(bce_spec(catalogue), tmp_path / "raw", tmp_path / "downloads", ROOT)
        first = manifest(tmp_path / "raw.partial")
        assert first[down]["status"] == "transient" and not (tmp_path / "raw").exists()
        assert all(first[gone]["status"] == "missing" for gone in catalogue.drops.missing)
        fetch_dataset(bce_spec(catalogue), tmp_path / "raw", tmp_path / "downloads", ROOT)
    row = manifest(tmp_path / "raw")[down]
    assert row["status"] == "ok" and (tmp_path / "raw" / "structures" / row["file"]).read_bytes() == catalogue.structure(row["file"])


def test_a_transient_failure_of_the_preferred_template_is_not_replaced_by_the_next(
    catalogue: Catalogue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BCE asks for ``.cif.gz`` first, ``.pdb.gz`` second. A 503 outage of the first for one run must
    leave the entry transient (the rerun gets the ``.cif.gz``), not freeze the ``.pdb.gz`` into raw/:
    which file raw/ holds must not depend on which host hiccupped."""
    down = next(i for i in catalogue.structure_ids["bce"] if i not in catalogue.drops.missing and i not in catalogue.drops.obsolete)
    monkeypatch.setattr(fetch, "STRUCTURE_BACKOFF_S", 0.01)
    outage = (Behaviour("unavailable", f"files.rcsb.org/download/{down.upper()}.cif.gz", times=fetch.STRUCTURE_RETRIES),)
    with UpstreamServer(catalogue, outage) as up:
        monkeypatch.setenv(UPSTREAM_BASE_ENV, up.base_url)
        try:
            fetch_dataset(bce_spec(catalogue), tmp_path / "raw", tmp_path / "downloads", ROOT)
        except DownloadError:
            fetch_dataset(bce_spec(catalogue), tmp_path / "raw", tmp_path / "downloads", ROOT)  # the plain rerun
    assert manifest(tmp_path / "raw")[down]["file"] == f"{down.upper()}.cif.gz"


@pytest.mark.slow  # builds a ProtFunct.zip of a few hundred chains: large enough that a drop leaves a resumable part
def test_drive_resume_sends_range_only_to_the_confirmed_url(catalogue: Catalogue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with UpstreamServer(catalogue, (Behaviour("drop", "drive.usercontent.google.com/*", times=1, cut_at=0.5),)) as up:
        monkeypatch.setenv(UPSTREAM_BASE_ENV, up.base_url)
        path = download_file(DRIVE_URL, tmp_path / "ProtFunct.zip", None, backoff_s=0.01)
    assert path.read_bytes() == catalogue.archive_path(catalogue.archive_routes[DRIVE_URL]).read_bytes()
    pages = [r for r in up.requests if r.route == "drive.google.com/uc"]
    assert pages and not [r for r in pages if "Range" in r.headers]
    assert any("Range" in r.headers for r in up.requests if r.route == "drive.usercontent.google.com/download")


def test_a_maintenance_page_for_an_unpinned_archive_is_asked_for_again(catalogue: Catalogue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    route = catalogue.archive_routes[LBA30_URL]
    spec = validate_config({"datasets": {"lba30": CONFIG["datasets"]["lba30"]}})["datasets"]["lba30"]
    with UpstreamServer(catalogue, (Behaviour("maintenance", route, times=1),)) as up:
        monkeypatch.setenv(UPSTREAM_BASE_ENV, up.base_url)
        try:
            fetch_dataset(spec, tmp_path / "raw", tmp_path / "downloads", ROOT)
        except DownloadError:
            fetch_dataset(spec, tmp_path / "raw", tmp_path / "downloads", ROOT)  # the plain rerun
    assert (tmp_path / "raw" / "split-by-sequence-identity-30" / "data" / "train" / "data.mdb").exists()


def test_retry_after_is_honoured(catalogue: Catalogue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = CONFIG["datasets"]["bce"]["download"]["files"][0]["url"]
    with UpstreamServer(catalogue, (Behaviour("rate_limit", url_key(url), times=1, retry_after=3),)) as up:
        monkeypatch.setenv(UPSTREAM_BASE_ENV, up.base_url)
        download_file(url, tmp_path / "labels_fold1.txt", None, backoff_s=0.01)
    first, second = up.requests[:2]
    assert second.time - first.time >= 3
