"""The download stage for a dataset: archive and/or files, then per-entry structures.

Everything fetched lands first in a persistent download cache (``downloads``) where
``bihmf.download.download_file`` verifies and resumes it; the dataset's raw folder is then assembled
beside its final name and renamed into place, so a killed job never leaves a raw folder
that looks complete.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bihmf.download import DownloadError, download_file, file_digest, resolve_url, safe_extract
from bihmf.io import write_text_atomic

log = logging.getLogger(__name__)


def remote_name(remote: dict[str, Any]) -> str:
    """File name of a remote file: the config's ``name`` or the URL's last path component."""
    return remote.get("name") or Path(urlparse(remote["url"]).path).name


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _fetch_entry(pdb_id: str, templates: list[str], cache: Path) -> dict[str, str]:
    """Try each URL template in order; the first that downloads wins."""
    errors = []
    for template in templates:
        url = template.format(id=pdb_id.lower(), ID=pdb_id.upper())
        dest = cache / remote_name({"url": url})
        try:
            download_file(url, dest, None, retries=3)
        except DownloadError as exc:
            errors.append(str(exc))
            continue
        return {"id": pdb_id, "status": "ok", "file": dest.name, "sha256": file_digest(dest, "sha256"), "error": ""}
    return {"id": pdb_id, "status": "missing", "file": "", "sha256": "", "error": " | ".join(errors)}


def fetch_structures(ids: list[str], spec: dict[str, Any], cache: Path, out_dir: Path) -> list[dict[str, str]]:
    """Fetch every entry concurrently (politely bounded); a missing entry is recorded, not fatal.

    Raises only when the missing fraction exceeds ``max_missing_fraction``; the manifest
    (``out_dir/structures_manifest.tsv``) lists every entry with its status either way.
    """
    cache.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=spec["max_workers"]) as pool:
        rows = list(pool.map(lambda pdb_id: _fetch_entry(pdb_id, spec["url_templates"], cache), ids))
    for row in rows:
        if row["status"] == "ok":
            _link_or_copy(cache / row["file"], out_dir / row["file"])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["id", "status", "file", "sha256", "error"], delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    manifest = out_dir / "structures_manifest.tsv"
    write_text_atomic(manifest, buffer.getvalue())
    missing = [row["id"] for row in rows if row["status"] != "ok"]
    if ids and len(missing) / len(ids) > spec["max_missing_fraction"]:
        raise DownloadError(
            f"{len(missing)} of {len(ids)} structures could not be fetched (more than "
            f"max_missing_fraction={spec['max_missing_fraction']}); see {manifest}"
        )
    if missing:
        log.warning("%d structures missing (listed in %s): %s", len(missing), manifest, ", ".join(missing[:20]))
    return rows


def fetch_dataset(spec: dict[str, Any], raw_dir: Path, downloads: Path, base_dir: Path) -> None:
    """Assemble ``raw_dir`` from the dataset's download spec (see the config schema)."""
    from bihmf.data import DATASETS  # the registry imports parsers, which this module does not need

    download = spec["download"]
    staging = raw_dir.with_name(raw_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    if "archive" in download:
        archive = download["archive"]
        path = download_file(resolve_url(archive["url"], base_dir), downloads / remote_name(archive), archive["checksum"])
        safe_extract(path, staging)
    staging.mkdir(parents=True, exist_ok=True)
    for remote in download["files"]:
        path = download_file(resolve_url(remote["url"], base_dir), downloads / remote_name(remote), remote["checksum"])
        _link_or_copy(path, staging / remote_name(remote))
    if "structures" in download:
        ids = DATASETS[spec["kind"]].structure_ids(staging, spec)
        fetch_structures(ids, download["structures"], downloads / "structures", staging / spec["structure_dir"])
    shutil.rmtree(raw_dir, ignore_errors=True)
    os.replace(staging, raw_dir)
