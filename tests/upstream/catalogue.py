"""What the upstream hosts answer, by real URL: every source of a config, at the published counts.

Routes (``host/path``, the form the simulator serves under ``/<host>/<path>``):

- every ``files`` URL of the config (IEConv text files, ScanNet label files and tables on
  ``raw.githubusercontent.com``);
- Google Drive: ``drive.google.com/uc?export=download&id=…`` answers today's virus-scan page, a
  form whose action is ``https://drive.usercontent.google.com/download`` with hidden ``id``,
  ``export``, ``confirm`` and ``uuid``; that URL with an issued ``uuid`` answers the file;
- Zenodo: ``zenodo.org/record/<n>/files/<name>`` answers 301 to ``https://zenodo.org/records/…``,
  which answers the file;
- RCSB: ``files.rcsb.org/download/<ID>{.pdb1.gz,-assembly1.cif.gz,.cif.gz,.pdb.gz}`` generated
  from the entry (huge assemblies have no PDB-format file, as at RCSB), 404 for obsolete and
  missing ids; ``data.rcsb.org/rest/v1/holdings/removed/<ID>`` answers the successor of an
  obsolete id (RCSB's field ``id_codes_replaced_by``) and 404 for any other id.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

from tests.upstream.datasets import Atom3d, React, ScanNet, url_key, synthetic_ids
from tests.upstream.structures import Entry, gzipped, has_pdb_format, mmcif_text, pdb_text

STRUCTURE_NAME = re.compile(r"(?P<id>[0-9A-Za-z]{4})(?P<suffix>\.pdb1\.gz|-assembly1\.cif\.gz|\.cif\.gz|\.pdb\.gz)")
HOLDINGS = "data.rcsb.org/rest/v1/holdings/removed/"
DRIVE_CONFIRM = "https://drive.usercontent.google.com/download"


@dataclass(frozen=True)
class Answer:
    """One response: status, headers, and a body in memory or in a file."""

    status: int = 200
    content_type: str = "application/octet-stream"
    data: bytes = b""
    path: Path | None = None
    location: str = ""

    @property
    def size(self) -> int:
        return self.path.stat().st_size if self.path is not None else len(self.data)

    def read(self, start: int, end: int) -> bytes:
        if self.path is None:
            return self.data[start:end]
        with self.path.open("rb") as handle:
            handle.seek(start)
            return handle.read(end - start)


NOT_FOUND = Answer(404, "text/plain", b"Not Found\n")


def drive_page(file_id: str, name: str, token: str) -> bytes:
    """Drive's virus-scan warning for a large file, in the form it has today (one GET form)."""
    return (
        "<!DOCTYPE html><html><head><meta http-equiv=\"content-type\" content=\"text/html; charset=utf-8\"/>"
        "<title>Google Drive - Virus scan warning</title></head><body><div class=\"uc-main\"><div id=\"uc-text\">"
        "<p class=\"uc-warning-caption\">Google Drive can't scan this file for viruses.</p>"
        f"<p class=\"uc-warning-subcaption\"><span class=\"uc-name-size\"><a href=\"/open?id={file_id}\">{name}</a></span>"
        " is too large for Google to scan for viruses. Would you still like to download this file?</p>"
        f"<form id=\"download-form\" action=\"{DRIVE_CONFIRM}\" method=\"get\">"
        "<input type=\"submit\" id=\"uc-download-link\" class=\"goog-inline-block jfk-button jfk-button-action\" value=\"Download anyway\"/>"
        f"<input type=\"hidden\" name=\"id\" value=\"{file_id}\"><input type=\"hidden\" name=\"export\" value=\"download\">"
        f"<input type=\"hidden\" name=\"confirm\" value=\"t\"><input type=\"hidden\" name=\"uuid\" value=\"{token}\">"
        "</form></div></div></body></html>"
    ).encode()


DRIVE_QUOTA_PAGE = (
    b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>"
    b"<div class=\"uc-main\"><div id=\"uc-text\"><p class=\"uc-error-caption\">Sorry, you can't view or download this "
    b"file at this time.</p><p class=\"uc-error-subcaption\">Too many users have viewed or downloaded this file recently. "
    b"Please try accessing the file again later. If the file you are trying to access is particularly large or is shared "
    b"with many people, it may take up to 24 hours to be able to view or download the file.</p></div></div></body></html>"
)
MAINTENANCE_PAGE = (
    b"<!DOCTYPE html><html><head><title>Down for maintenance</title></head><body><h1>We'll be back soon</h1>"
    b"<p>The service is undergoing scheduled maintenance. Please try again in a few minutes.</p></body></html>"
)


@dataclass
class Drops:
    """Structure ids the catalogue answers 404 for, by the reason a correct client should give."""

    obsolete: dict[str, str] = field(default_factory=dict)  # id -> successor id
    missing: set[str] = field(default_factory=set)


class Catalogue:
    """Every URL of ``config`` (a loaded config.yaml) with content at ``fraction`` of the published counts.

    ``obsolete_share`` / ``missing_share`` of each dataset's structure ids (seeded choice) are
    obsolete (with a successor serving the same residues) or gone.
    """

    def __init__(self, config: dict[str, Any], cache_dir: Path, *, fraction: float = 1.0, seed: int = 0,
                 obsolete_share: float = 0.003, missing_share: float = 0.002):  # fmt: skip
        rng = np.random.default_rng(seed)
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._texts: dict[str, bytes] = {}  # route -> body (GitHub raw files)
        self._archives: dict[str, tuple[str, Any]] = {}  # route -> (file name, builder with write_archive)
        self._drive: dict[str, str] = {}  # Drive file id -> its archive route
        self.archive_routes: dict[str, str] = {}  # archive URL as configured -> route serving it
        self._issued: set[str] = set()  # Drive confirmation uuids handed out
        self.entries: dict[str, Entry] = {}
        self.structure_ids: dict[str, list[str]] = {}  # dataset -> its ids (label-file order)
        self.datasets: dict[str, Any] = {}
        taken: set[str] = set()
        for name, spec in config["datasets"].items():
            self._add(name, spec, fraction, rng, taken)
        self.drops = self._choose_drops(rng, taken, obsolete_share, missing_share)

    # ------------------------------------------------------------------ building

    def _add(self, name: str, spec: dict[str, Any], fraction: float, rng: np.random.Generator, taken: set[str]) -> None:
        kind, download = spec["kind"], spec["download"]
        if kind == "react":
            content = React(fraction, rng, taken)
        elif kind in ("ppbs", "bce"):
            content = ScanNet(kind, spec, fraction, rng, taken)
            taken.update(content.entries)
            for pdb_id, entry in content.entries.items():
                self.entries.setdefault(pdb_id, entry)
            self.structure_ids[name] = list(content.entries)
        elif kind in ("psr", "lba"):
            top = {"psr": "split-by-year"}.get(name) or Path(spec.get("paths", {}).get("train", "split-by-sequence-identity-30/data/train")).parts[0]
            content = Atom3d(name, top, fraction, rng)
        else:
            raise ValueError(f"dataset {name}: no simulated content for kind {kind!r}")
        self.datasets[name] = content
        for remote in download.get("files", []):
            file_name = Path(urlparse(remote["url"]).path).name
            self._texts[url_key(remote["url"])] = content.files[file_name].encode()
        if "archive" in download:
            url = download["archive"]["url"]
            file_name = download["archive"].get("name") or Path(urlparse(url).path).name
            route = url_key(url).replace("zenodo.org/record/", "zenodo.org/records/")
            if urlparse(url).hostname == "drive.google.com":
                route = f"drive.usercontent.google.com/download/{parse_qs(urlparse(url).query)['id'][0]}"
                self._drive[parse_qs(urlparse(url).query)["id"][0]] = route
            self._archives[route] = (file_name, content)
            self.archive_routes[url] = route

    def _choose_drops(self, rng: np.random.Generator, taken: set[str], obsolete_share: float, missing_share: float) -> Drops:
        """Per dataset, ``round(ids * share)`` of its ids (seeded), so each stays within its allowance."""
        drops = Drops()
        for name in sorted(self.structure_ids):
            ids = sorted(set(self.structure_ids[name]) - set(drops.obsolete) - drops.missing)
            picked = rng.permutation(len(ids))
            n_obsolete, n_missing = round(len(ids) * obsolete_share), round(len(ids) * missing_share)
            for index, successor in zip(picked[:n_obsolete], synthetic_ids(rng, n_obsolete, taken)):
                old = self.entries[ids[index]]
                drops.obsolete[old.pdb_id] = successor
                self.entries[successor] = Entry(successor, old.chains, old.models, old.copies)
            drops.missing |= {ids[i] for i in picked[n_obsolete : n_obsolete + n_missing]}
        return drops

    # ------------------------------------------------------------------ answering

    def archive_path(self, route: str) -> Path:
        """The archive of ``route``, built on first use (one build at a time, then reused)."""
        file_name, content = self._archives[route]
        path = self.cache_dir / file_name
        with self._lock:
            if not path.exists():
                part = path.with_name(path.name + ".building")
                content.write_archive(part)
                part.rename(path)
        return path

    def text(self, url: str) -> bytes:
        """The body served for a ``files`` URL."""
        return self._texts[url_key(url)]

    def structure(self, name: str) -> bytes | None:
        """A structure file's gzipped bytes by its RCSB file name; None where RCSB has none."""
        match = STRUCTURE_NAME.fullmatch(name)
        if match is None:
            return None
        pdb_id, suffix = match["id"].lower(), match["suffix"]
        entry = self.entries.get(pdb_id)
        if entry is None or pdb_id in self.drops.missing or pdb_id in self.drops.obsolete:
            return None
        if suffix in (".pdb1.gz", ".pdb.gz"):
            if not has_pdb_format(entry):
                return None  # RCSB answers 404: the entry is mmCIF-only
            single = Entry(entry.pdb_id, entry.chains, entry.models if suffix == ".pdb1.gz" else 1)
            return gzipped(pdb_text(single))
        return gzipped(mmcif_text(entry if suffix == "-assembly1.cif.gz" else Entry(entry.pdb_id, entry.chains)))

    def answer(self, host: str, path: str, query: str) -> Answer:
        """The response of an upstream host to ``GET https://host/path?query``."""
        route, params = f"{host}{path}", parse_qs(query)
        if route in self._texts:
            return Answer(200, "text/plain; charset=utf-8", self._texts[route])
        if route.startswith("zenodo.org/record/"):
            target = "https://" + route.replace("zenodo.org/record/", "zenodo.org/records/", 1) + (f"?{query}" if query else "")
            return Answer(301, "text/html", b"", location=target)
        if route in self._archives:
            return Answer(200, "application/octet-stream", path=self.archive_path(route))
        if route == "drive.google.com/uc" and params.get("id", [""])[0] in self._drive:
            return self._drive_page(params["id"][0])
        if route == "drive.usercontent.google.com/download" and params.get("id", [""])[0] in self._drive:
            if params.get("confirm") and params.get("uuid", [""])[0] in self._issued:
                return Answer(200, "application/octet-stream", path=self.archive_path(self._drive[params["id"][0]]))
            return self._drive_page(params["id"][0])
        if route.startswith("files.rcsb.org/download/"):
            body = self.structure(route.rsplit("/", 1)[1])
            return NOT_FOUND if body is None else Answer(200, "application/octet-stream", body)
        if route.startswith(HOLDINGS):
            return self._holdings(route[len(HOLDINGS) :])
        return NOT_FOUND

    def _drive_page(self, file_id: str) -> Answer:
        token = str(uuid.uuid4())
        with self._lock:
            self._issued.add(token)
        return Answer(200, "text/html; charset=utf-8", drive_page(file_id, self._archives[self._drive[file_id]][0], token))

    def _holdings(self, pdb_id: str) -> Answer:
        successor = self.drops.obsolete.get(pdb_id.lower())
        if successor is None:
            body = {"status": 404, "message": f"No data found for entry: {pdb_id.upper()}"}
            return Answer(404, "application/json", json.dumps(body).encode())
        body = {
            "rcsb_id": pdb_id.upper(),
            "rcsb_repository_holdings_removed": {
                "id_codes_replaced_by": [successor.upper()],
                "remove_date": "2024-01-01T00:00:00+0000",
                "title": "synthetic obsolete entry",
            },
        }
        return Answer(200, "application/json", json.dumps(body).encode())
