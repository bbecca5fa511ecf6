"""The lock file: what the first run downloaded, so every later run gets the same bytes.

Most sources publish no checksums, and the ~17k RCSB structure files can change under the
same URL. Each download job records the sha256 of every URL it used (``<downloads>/seen/
<dataset>.json``); ``bihmf lock`` collects these records into a versioned lock file beside the
config (``bihmf.lock.yaml``), and later download jobs compare what they fetch with it. The lock
is read by the job, never a rule input or param, so writing or updating it reruns nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from bihmf.download import DownloadError
from bihmf.io import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

LOCK_FILE = "bihmf.lock.yaml"
"""Default lock file, relative to the working directory (where ``config.yaml`` lives)."""

LOCK_VERSION = 1

_SHOWN = 20


class LockDriftError(DownloadError):
    """Files fetched now differ from the digests in the lock file."""


def seen_path(downloads: Path, dataset: str) -> Path:
    """Where a download job records what it fetched for ``dataset``."""
    return downloads / "seen" / f"{dataset}.json"


def record_seen(downloads: Path, dataset: str, digests: dict[str, str]) -> Path:
    """Record URL -> sha256 of everything the job fetched for ``dataset`` (read by ``bihmf lock``)."""
    path = seen_path(downloads, dataset)
    write_json_atomic(path, {"dataset": dataset, "files": {url: f"sha256:{digest}" for url, digest in digests.items()}})
    return path


def read_lock(lock_file: Path) -> dict[str, dict[str, str]]:
    """Dataset -> URL -> ``sha256:<hex>`` from ``lock_file``; a clear error for another version."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # a lock holds ~40k lines: the C loader if built
    try:
        content = yaml.load(lock_file.read_text(), Loader=loader)
    except yaml.YAMLError as exc:
        raise DownloadError(f"{lock_file}: not a readable lock file ({exc}); write it again with `bihmf lock`") from exc
    if not isinstance(content, dict) or content.get("version") != LOCK_VERSION or not isinstance(content.get("datasets"), dict):
        raise DownloadError(
            f"{lock_file}: expected a bihmf lock file of version {LOCK_VERSION} with a 'datasets' mapping; "
            "write it again with `bihmf lock`"
        )
    return content["datasets"]


def check(lock_file: Path, dataset: str, digests: dict[str, str]) -> None:
    """Compare what the job fetched for ``dataset`` with ``lock_file`` (if it exists and lists it).

    Every differing file is named. A URL the lock does not list (a structure that failed when the
    lock was written) is accepted and logged; a locked URL not fetched now (an entry that became
    obsolete or missing) counts as drift, because the dataset would silently lose it.
    """
    if not lock_file.exists():
        return
    locked = read_lock(lock_file).get(dataset)
    if locked is None:
        log.warning("%s lists no files of dataset %s; run `bihmf lock` to add them", lock_file, dataset)
        return
    drift = [
        f"{url}: locked {want}, fetched {'sha256:' + digests[url] if url in digests else 'nothing'}"
        for url, want in sorted(locked.items())
        if f"sha256:{digests.get(url)}" != want
    ]
    new = sorted(set(digests) - set(locked))
    if new:
        log.warning("%d files of %s are not in %s (first: %s); `bihmf lock` adds them", len(new), dataset, lock_file, new[0])
    if drift:
        shown = "\n  ".join(drift[:_SHOWN]) + (f"\n  ... and {len(drift) - _SHOWN} more" if len(drift) > _SHOWN else "")
        raise LockDriftError(
            f"{len(drift)} files of dataset {dataset} differ from {lock_file}:\n  {shown}\n"
            "The raw folder was not written. If the upstream change is expected, accept it by locking again "
            f"(`bihmf lock`, which records what this run fetched) and rerun; otherwise keep {lock_file} and find out "
            "what changed upstream."
        )
    log.info("every locked file of %s matches %s", dataset, lock_file)


def write_lock(downloads: Path, lock_file: Path) -> dict[str, int]:
    """Write ``lock_file`` from every dataset's seen record; return dataset -> files locked.

    Datasets without a record (not downloaded here) keep their entries from an existing lock,
    so a lock can be completed dataset by dataset.
    """
    records = sorted((downloads / "seen").glob("*.json"))
    if not records:
        raise DownloadError(f"nothing to lock: no download records under {downloads / 'seen'}; run the downloads first")
    datasets = read_lock(lock_file) if lock_file.exists() else {}
    for record in records:
        content = json.loads(record.read_text())
        datasets[content["dataset"]] = dict(sorted(content["files"].items()))
    header = (
        "# bihmf lock file: sha256 of every file the downloads fetched, by dataset and URL.\n"
        "# Written by `bihmf lock`; download jobs compare what they fetch with it. Share it with the config.\n"
    )
    body = yaml.safe_dump({"version": LOCK_VERSION, "datasets": dict(sorted(datasets.items()))}, sort_keys=False, width=1000)
    write_text_atomic(lock_file, header + body)
    return {name: len(files) for name, files in datasets.items()}
