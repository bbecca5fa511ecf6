"""The upstream simulator itself: real URL paths, today's Drive flow, hostile behaviours, its request log."""

from __future__ import annotations

import csv
import gzip
import io
import json
import socket
import time
from pathlib import Path

import pytest
import requests
import yaml

from bihmf.data.structure import read_chains
from bihmf.io import file_digest
from tests.upstream import Behaviour, Catalogue, UpstreamServer
from tests.upstream.catalogue import DRIVE_CONFIRM
from tests.upstream.datasets import url_key
from tests.upstream.structures import Entry

ROOT = Path(__file__).resolve().parents[1]
DRIVE_ID = "1udP6_90WYkwkvL1LwqIAzf9ibegBJ8rI"


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Catalogue:
    """config.yaml's react, psr and bce sources at a few entries each (archives built on first use)."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["datasets"] = {name: config["datasets"][name] for name in ("react", "psr", "bce")}
    return Catalogue(config, tmp_path_factory.mktemp("upstream"), fraction=0.0005, obsolete_share=0.2, missing_share=0.2)


def get(up: UpstreamServer, route: str, **kwargs) -> requests.Response:
    return requests.get(f"{up.base_url}/{route}", timeout=10, allow_redirects=False, **kwargs)


def test_drive_answers_todays_confirmation_form_then_the_file(catalogue: Catalogue) -> None:
    with UpstreamServer(catalogue) as up:
        page = get(up, f"drive.google.com/uc?export=download&id={DRIVE_ID}")
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
        assert f'action="{DRIVE_CONFIRM}"' in page.text
        fields = dict(__import__("re").findall(r'type="hidden" name="(\w+)" value="([^"]*)"', page.text))
        assert set(fields) == {"id", "export", "confirm", "uuid"}
        stranger = get(up, "drive.usercontent.google.com/download", params={**fields, "uuid": "not-issued"})
        assert stranger.headers["Content-Type"].startswith("text/html")  # an unknown uuid is not confirmed
        body = get(up, "drive.usercontent.google.com/download", params=fields)
        assert body.status_code == 200 and body.content[:4] == b"PK\x03\x04"


def test_zenodo_record_redirects_to_records_which_serves_the_tarball(catalogue: Catalogue) -> None:
    route = "zenodo.org/record/4915648/files/PSR-split-by-year.tar.gz"
    with UpstreamServer(catalogue) as up:
        moved = get(up, route + "?download=1")
        assert moved.status_code == 301
        assert moved.headers["Location"] == "https://zenodo.org/records/4915648/files/PSR-split-by-year.tar.gz?download=1"
        assert get(up, route.replace("/record/", "/records/")).content[:2] == b"\x1f\x8b"


def test_github_raw_serves_the_real_scannet_rows(catalogue: Catalogue) -> None:
    """The real BCE table, cut to the served folds' first entries (the whole file at fraction 1)."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    url = next(f["url"] for f in config["datasets"]["bce"]["download"]["files"] if f["url"].endswith("table.csv"))
    with UpstreamServer(catalogue) as up:
        served = list(csv.reader(io.StringIO(get(up, url_key(url)).text)))
    real = list(csv.reader((ROOT / "tests/data/scannet/BCE/table.csv").open()))
    assert served[0] == real[0]
    for fold in {row[-2] for row in served[1:]}:
        mine = [row[1:] for row in served[1:] if row[-2] == fold]
        assert mine == [row[1:] for row in real[1:] if row[-2] == fold][: len(mine)]


def test_rcsb_structures_hold_the_labelled_residues_and_obsolete_ids_name_their_successor(catalogue: Catalogue, tmp_path: Path) -> None:
    (obsolete, successor), missing = next(iter(catalogue.drops.obsolete.items())), next(iter(catalogue.drops.missing))
    present = next(i for i in catalogue.structure_ids["bce"] if i not in catalogue.drops.missing and i not in catalogue.drops.obsolete)
    with UpstreamServer(catalogue) as up:
        path = tmp_path / f"{present.upper()}.cif.gz"
        path.write_bytes(get(up, f"files.rcsb.org/download/{path.name}").content)
        assert get(up, f"files.rcsb.org/download/{obsolete.upper()}.cif.gz").status_code == 404
        holdings = get(up, f"data.rcsb.org/rest/v1/holdings/removed/{obsolete.upper()}").json()
        assert holdings["rcsb_repository_holdings_removed"]["id_codes_replaced_by"] == [successor.upper()]
        assert get(up, f"files.rcsb.org/download/{successor.upper()}.cif.gz").status_code == 200
        assert get(up, f"files.rcsb.org/download/{missing.upper()}.cif.gz").status_code == 404
        assert get(up, f"data.rcsb.org/rest/v1/holdings/removed/{missing.upper()}").status_code == 404
    chains = read_chains(path)
    for name, residues in catalogue.entries[present].chains:
        assert list(zip(chains[name].resnums.tolist(), chains[name].sequence)) == list(residues)
        assert chains[name].protein_problem() is None


def test_an_entry_with_long_chain_ids_is_served_only_as_mmcif(catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch) -> None:
    """As RCSB: no PDB-format file (404, so the client takes its mmCIF template) for chain ids of
    two characters, which ScanNet's label files name for ribosomes (4v5b, 4v88, ...)."""
    monkeypatch.setitem(catalogue.entries, "9zzz", Entry("9zzz", (("AA", ((1, "M"), (2, "K"))), ("B", ((1, "G"),)))))
    with UpstreamServer(catalogue) as up:
        assert get(up, "files.rcsb.org/download/9ZZZ.pdb1.gz").status_code == 404
        assert get(up, "files.rcsb.org/download/9ZZZ.pdb.gz").status_code == 404
        cif = get(up, "files.rcsb.org/download/9ZZZ.cif.gz")
    assert cif.status_code == 200 and " AA " in gzip.decompress(cif.content).decode()


def test_behaviours_apply_per_path_for_their_first_requests(catalogue: Catalogue) -> None:
    table = "raw.githubusercontent.com/jertubiana/ScanNet/7685549c8ed2159a0f441a977dec767343256292/datasets/BCE/table.csv"
    fold = table.replace("table.csv", "labels_fold1.txt")
    behaviours = (
        Behaviour("rate_limit", table, times=1, retry_after=7),
        Behaviour("unavailable", table, times=1),
        Behaviour("maintenance", fold, times=1),
        Behaviour("empty", fold, times=1),
    )
    with UpstreamServer(catalogue, behaviours) as up:
        limited = get(up, table)
        assert (limited.status_code, limited.headers["Retry-After"]) == (429, "7")
        assert get(up, table).status_code == 503
        assert get(up, table).content == catalogue.text("https://" + table)
        maintenance = get(up, fold)
        assert maintenance.status_code == 200 and b"maintenance" in maintenance.content
        assert get(up, fold).content == b""
        assert get(up, fold).content == catalogue.text("https://" + fold)
        assert [r.behaviour for r in up.requests] == ["rate_limit", "unavailable", "", "maintenance", "empty", ""]


class _LateToRecordFirstRequest(UpstreamServer):
    """Its first request's handler records only after the next request was answered: what the
    thread scheduler may do to two requests on separate connections."""

    def _record(self, *args: object) -> None:
        if not self._state.log and not getattr(self, "_delayed", False):
            self._delayed = True
            time.sleep(0.3)
        super()._record(*args)


def test_the_request_log_is_in_arrival_order_when_handlers_record_out_of_order(catalogue: Catalogue) -> None:
    table = "raw.githubusercontent.com/jertubiana/ScanNet/7685549c8ed2159a0f441a977dec767343256292/datasets/BCE/labels_fold1.txt"
    with _LateToRecordFirstRequest(catalogue) as up:
        first = get(up, table, headers={"Range": "bytes=1-"})
        second = get(up, table, headers={"Range": "bytes=2-"})
        assert (first.status_code, second.status_code) == (206, 206)
        assert [r.headers.get("Range") for r in up.requests] == ["bytes=1-", "bytes=2-"]


def test_ranges_are_honoured_unless_told_and_a_drop_cuts_the_body(catalogue: Catalogue) -> None:
    fold = "raw.githubusercontent.com/jertubiana/ScanNet/7685549c8ed2159a0f441a977dec767343256292/datasets/BCE/labels_fold1.txt"
    whole = catalogue.text("https://" + fold)
    with UpstreamServer(catalogue, (Behaviour("drop", fold, times=1, cut_at=0.25), Behaviour("ignore_range", fold, times=1))) as up:
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            get(up, fold).content  # noqa: B018 (reading the body is the point)
        ignored = get(up, fold, headers={"Range": "bytes=10-"})
        assert (ignored.status_code, ignored.content) == (200, whole)
        honoured = get(up, fold, headers={"Range": "bytes=10-"})
        assert honoured.status_code == 206 and honoured.content == whole[10:]
        assert honoured.headers["Content-Range"] == f"bytes 10-{len(whole) - 1}/{len(whole)}"
        assert get(up, fold, headers={"Range": f"bytes={len(whole)}-"}).status_code == 416
        assert [r.headers.get("Range") for r in up.requests] == [None, "bytes=10-", "bytes=10-", f"bytes={len(whole)}-"]
        assert up.requests[0].bytes_sent == int(len(whole) * 0.25)


def test_drive_quota_slow_and_a_stable_share_of_paths(catalogue: Catalogue) -> None:
    behaviours = (Behaviour("drive_quota", "drive.google.com/uc"), Behaviour("slow", "files.rcsb.org/*", delay_s=0.3), )
    with UpstreamServer(catalogue, behaviours) as up:
        quota = get(up, f"drive.google.com/uc?export=download&id={DRIVE_ID}")
        assert quota.status_code == 200 and b"Quota exceeded" in quota.content
        started = time.monotonic()
        get(up, "files.rcsb.org/download/0000.cif.gz")
        assert time.monotonic() - started >= 0.3
    share = Behaviour("unavailable", "files.rcsb.org/*", share=0.5)
    routes = [f"files.rcsb.org/download/{i:04d}.cif.gz" for i in range(400)]
    chosen = [r for r in routes if share.selects(r)]
    assert 150 < len(chosen) < 250 and chosen == [r for r in routes if share.selects(r)]
    other = Behaviour("rate_limit", "files.rcsb.org/*", share=0.5, times=1)
    both = [r for r in chosen if other.selects(r)]
    assert 60 < len(both) < 140  # independent choices: a quarter of the paths, not the same half
    with pytest.raises(ValueError, match="unknown behaviour"):
        Behaviour("teapot")


def test_server_stops_by_itself_after_its_request_budget(catalogue: Catalogue) -> None:
    up = UpstreamServer(catalogue, max_requests=2).start()
    port = int(up.base_url.rsplit(":", 1)[1])
    get(up, "nowhere.example/a")
    get(up, "nowhere.example/b")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the server still accepts connections after its request budget")
    assert [r.status for r in up.requests] == [404, 404]
    up.stop()  # idempotent


def test_archives_are_deterministic(catalogue: Catalogue, tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["datasets"] = {"react": config["datasets"]["react"]}
    again = Catalogue(config, tmp_path, fraction=0.0005)
    route = f"drive.usercontent.google.com/download/{DRIVE_ID}"
    first = catalogue.archive_path(route)
    assert file_digest(again.archive_path(route), "sha256") == file_digest(first, "sha256")
    assert json.dumps(sorted(again.datasets["react"].files)) == json.dumps(sorted(catalogue.datasets["react"].files))
