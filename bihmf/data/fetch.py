"""The download stage for a dataset: archive and/or files, then per-entry structures.

Everything fetched lands first in a persistent download cache (``downloads``), one entry per
URL (:func:`bihmf.download.cache_entry`), where ``download_file`` verifies and resumes it; the
dataset's raw folder is then assembled beside its final name and renamed into place, so a
killed job never leaves a raw folder that looks complete. What the job saw (every URL and the
sha256 of its bytes) is recorded for ``bihmf lock`` and checked against the lock file if one
exists (:mod:`bihmf.lock`).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests

from bihmf import lock
from bihmf.data.manifest import MANIFEST, write_manifest
from bihmf.download import (
    DownloadError,
    NotFoundError,
    TransientError,
    cache_entry,
    download_file,
    http_session,
    resolve_url,
)
from bihmf.extract import ArchiveError, safe_extract
from bihmf.io import file_digest

log = logging.getLogger(__name__)

HOLDINGS_URL = "https://data.rcsb.org/rest/v1/holdings/removed/{ID}"
"""RCSB's record of a removed entry: 404 while the entry is current (or never existed)."""

STRUCTURE_RETRIES = 5
STRUCTURE_BACKOFF_S = 1.0
"""Attempts per structure URL and the first backoff: 1 + 2 + 4 + 8 s (jittered) rides out a short burst."""


def remote_name(remote: dict[str, Any]) -> str:
    """File name of a remote file: the config's ``name`` or the URL's last path component."""
    return remote.get("name") or Path(urlparse(remote["url"]).path).name


def without_checksums(spec: Any) -> Any:
    """``spec`` with every ``checksum`` key removed: what may trigger a new download.

    A checksum pinned after the first run describes the same bytes, so the rule's params (which
    Snakemake compares to decide reruns) must not contain it; the job reads the checksums from
    the config instead.
    """
    if isinstance(spec, dict):
        return {key: without_checksums(value) for key, value in spec.items() if key != "checksum"}
    if isinstance(spec, list):
        return [without_checksums(value) for value in spec]
    return copy.deepcopy(spec)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# --------------------------------------------------------------------------- structures


def _row(pdb_id: str, status: str, error: str = "", **fields: str) -> dict[str, str]:
    return {"id": pdb_id, "status": status, "file": "", "url": "", "sha256": "", "successor": "", "error": error} | fields


def _removed_entry(pdb_id: str, cache: Path, session: requests.Session, errors: list[str]) -> dict[str, str]:
    """Why no template found ``pdb_id``: obsolete (with its successors), missing, or transient."""
    url = HOLDINGS_URL.format(ID=pdb_id.upper())
    try:
        dest = cache_entry(cache, url, f"{pdb_id.upper()}.json")
        path = download_file(
            url, dest, None, retries=STRUCTURE_RETRIES, backoff_s=STRUCTURE_BACKOFF_S, session=session, announce_unpinned=False
        )
    except NotFoundError:
        return _row(pdb_id, "missing", " | ".join(errors) + " | not in RCSB's removed entries either")
    except DownloadError as exc:
        return _row(pdb_id, "transient", f"{' | '.join(errors)} | holdings lookup: {exc}")
    try:
        removed = json.loads(path.read_text())["rcsb_repository_holdings_removed"]
        successors = [str(code).upper() for code in removed.get("id_codes_replaced_by") or []]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        path.unlink()
        return _row(pdb_id, "transient", f"{url}: unreadable holdings answer ({exc})")
    when = str(removed.get("remove_date") or "").partition("T")[0]
    note = f"removed from the PDB{' on ' + when if when else ''}; " + (
        f"replaced by {', '.join(successors)}" if successors else "withdrawn without a successor"
    )
    return _row(pdb_id, "obsolete", note, successor=",".join(successors))


def _fetch_entry(pdb_id: str, templates: list[str], cache: Path, session: requests.Session) -> dict[str, str]:
    """Try each URL template in order; the first that downloads wins, a 404 moves on.

    A template that fails transiently ends the entry as transient at once: falling through to the
    next template would make which file ``raw/`` holds (PDB or mmCIF, assembly or asymmetric
    unit) depend on which host hiccupped, and a clean rebuild would then drift from the lock.
    Only when every template says 404 is the entry looked up in RCSB's removed holdings.
    """
    errors = []
    for template in templates:
        url = template.format(id=pdb_id.lower(), ID=pdb_id.upper())
        dest = cache_entry(cache, url, remote_name({"url": url}))
        try:
            download_file(
                url, dest, None, retries=STRUCTURE_RETRIES, backoff_s=STRUCTURE_BACKOFF_S, session=session, announce_unpinned=False
            )
        except NotFoundError as exc:
            errors.append(str(exc))
            continue
        except DownloadError as exc:
            return _row(pdb_id, "transient", " | ".join([*errors, str(exc)]))
        return _row(pdb_id, "ok", file=dest.name, url=url, sha256=file_digest(dest, "sha256"))
    return _removed_entry(pdb_id, cache, session, errors)


def fetch_structures(
    ids: list[str], spec: dict[str, Any], cache: Path, out_dir: Path, session: requests.Session | None = None
) -> list[dict[str, str]]:
    """Fetch every entry concurrently (politely bounded); the manifest lists each with its status.

    Statuses: ``ok``; ``obsolete`` (removed from the PDB, successors named: the labels belong to
    the old entry, so no successor is substituted); ``missing`` (404 and not a removed entry);
    ``transient`` (rate limit, server error, dropped connection after every retry). Transient
    entries are never frozen into a raw folder: any of them fails the job after the manifest is
    written, every fetched file stays cached, and the rerun asks only for what is missing.
    Obsolete and missing entries are dropped, up to ``max_missing_fraction``.
    """
    cache.mkdir(parents=True, exist_ok=True)
    with nullcontext(session) if session is not None else http_session(spec["max_workers"]) as pooled:
        with ThreadPoolExecutor(max_workers=spec["max_workers"]) as pool:
            rows = list(pool.map(lambda pdb_id: _fetch_entry(pdb_id, spec["url_templates"], cache, pooled), ids))
    for row in rows:
        if row["status"] == "ok":
            _link_or_copy(cache_entry(cache, row["url"], row["file"]), out_dir / row["file"])
    manifest = write_manifest(rows, out_dir / MANIFEST)
    transient = [row for row in rows if row["status"] == "transient"]
    if transient:
        raise TransientError(
            f"{len(transient)} of {len(ids)} structures failed transiently (listed in {manifest}; first: "
            f"{transient[0]['id']}: {transient[0]['error']}); the others are cached, so rerunning the job asks "
            "only for these"
        )
    dropped = [row for row in rows if row["status"] != "ok"]
    if ids and len(dropped) / len(ids) > spec["max_missing_fraction"]:
        raise DownloadError(
            f"{len(dropped)} of {len(ids)} structures could not be fetched (more than "
            f"max_missing_fraction={spec['max_missing_fraction']}); see {manifest}"
        )
    for row in dropped:
        log.warning("structure %s dropped (%s): %s", row["id"], row["status"], row["error"])
    log.info("%d of %d structures fetched; their sha256 are in %s (`bihmf lock` records them)", len(rows) - len(dropped), len(ids), manifest)
    return rows


# --------------------------------------------------------------------------- one dataset


def _extract_or_set_aside(path: Path, checksum: str | None, staging: Path) -> None:
    """Extract ``path``; an unpinned file that is no archive is moved aside so a rerun asks again.

    A pinned file that fails extraction is what the config asked for, so it stays where it is.
    """
    try:
        safe_extract(path, staging)
    except ArchiveError as exc:
        if checksum is not None:
            raise
        aside = path.with_name(f"{path.name}.rejected-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(path, aside)
        raise DownloadError(f"{exc}; moved it aside to {aside}, so a rerun downloads it again") from exc


def fetch_dataset(
    spec: dict[str, Any],
    raw_dir: Path,
    downloads: Path,
    base_dir: Path,
    *,
    dataset: str | None = None,
    lock_file: Path | None = None,
) -> None:
    """Assemble ``raw_dir`` from the dataset's download spec (see the config schema).

    With ``dataset`` given, the sha256 of everything fetched is recorded for ``bihmf lock`` and,
    when ``lock_file`` exists, checked against it before the raw folder is published.
    """
    from bihmf.data import DATASETS  # the registry imports parsers, which this module does not need

    download = spec["download"]
    staging = raw_dir.with_name(raw_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    seen: dict[str, str] = {}
    workers = download.get("structures", {}).get("max_workers", 1)
    with http_session(workers) as session:

        def fetch(remote: dict[str, Any]) -> Path:
            url = resolve_url(remote["url"], base_dir)
            path = download_file(url, cache_entry(downloads, url, remote_name(remote)), remote["checksum"], session=session)
            seen[remote["url"]] = file_digest(path, "sha256")
            return path

        if "archive" in download:
            _extract_or_set_aside(fetch(download["archive"]), download["archive"]["checksum"], staging)
        staging.mkdir(parents=True, exist_ok=True)
        for remote in download["files"]:
            _link_or_copy(fetch(remote), staging / remote_name(remote))
        if "structures" in download:
            ids = DATASETS[spec["kind"]].structure_ids(staging, spec)
            structures = staging / spec["structure_dir"]
            rows = fetch_structures(ids, download["structures"], downloads / "structures", structures, session)
            seen.update({row["url"]: row["sha256"] for row in rows if row["status"] == "ok"})
    if dataset is not None:
        lock.record_seen(downloads, dataset, seen)
        if lock_file is not None:
            lock.check(lock_file, dataset, seen)
    shutil.rmtree(raw_dir, ignore_errors=True)
    os.replace(staging, raw_dir)
