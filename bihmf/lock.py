"""The lock file: what the first run downloaded, so every later run gets the same bytes.

Most sources publish no checksums (fair-esm's checkpoints neither), and the ~17k RCSB structure
files can change under the same URL. Each download job records the sha256 of every URL it used:
a dataset's job in ``<downloads>/seen/<dataset>.json``, an ESM checkpoint's in
``<downloads>/seen/checkpoints/<model>.json``. ``bihmf lock`` collects these records into a
versioned lock file beside the config (``bihmf.lock.yaml``), and later download jobs compare what
they fetch with it. The lock is read by the job, never a rule input or param, so writing or
updating it reruns nothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Section:
    """One kind of locked download: where its jobs record what they fetched, and what it is called."""

    key: str  # top-level key of the lock file, and of the record naming what was fetched
    folder: str  # under <downloads>/seen/
    noun: str  # for messages

    @property
    def record_key(self) -> str:
        return self.key.removesuffix("s")


DATASETS = Section("datasets", "", "dataset")
CHECKPOINTS = Section("checkpoints", "checkpoints", "ESM checkpoint")
SECTIONS = (DATASETS, CHECKPOINTS)


def seen_path(downloads: Path, name: str, section: Section = DATASETS) -> Path:
    """Where a download job records what it fetched for ``name``."""
    return downloads / "seen" / section.folder / f"{name}.json"


def record_seen(downloads: Path, name: str, digests: dict[str, str], section: Section = DATASETS) -> Path:
    """Record URL -> sha256 of everything the job fetched for ``name`` (read by ``bihmf lock``)."""
    path = seen_path(downloads, name, section)
    write_json_atomic(path, {section.record_key: name, "files": {url: f"sha256:{digest}" for url, digest in digests.items()}})
    return path


def read_lock(lock_file: Path) -> dict[str, dict[str, dict[str, str]]]:
    """Section key -> name -> URL -> ``sha256:<hex>`` from ``lock_file`` (every section present,
    empty where the lock has none: locks written before checkpoints were locked have no
    ``checkpoints``); a clear error for another version."""
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
    return {section.key: content.get(section.key) or {} for section in SECTIONS}


def check(lock_file: Path, name: str, digests: dict[str, str], section: Section = DATASETS) -> None:
    """Compare what the job fetched for ``name`` with ``lock_file`` (if it exists and lists it).

    Every differing file is named. A URL the lock does not list (a structure that failed when the
    lock was written) is accepted and logged; a locked URL not fetched now (an entry that became
    obsolete or missing) counts as drift, because the dataset would silently lose it.
    """
    if not lock_file.exists():
        return
    what = f"{section.noun} {name}"
    locked = read_lock(lock_file)[section.key].get(name)
    if locked is None:
        log.warning("%s lists no files of %s; run `bihmf lock` to add them", lock_file, what)
        return
    drift = [
        f"{url}: locked {want}, fetched {'sha256:' + digests[url] if url in digests else 'nothing'}"
        for url, want in sorted(locked.items())
        if f"sha256:{digests.get(url)}" != want
    ]
    new = sorted(set(digests) - set(locked))
    if new:
        log.warning("%d files of %s are not in %s (first: %s); `bihmf lock` adds them", len(new), what, lock_file, new[0])
    if drift:
        shown = "\n  ".join(drift[:_SHOWN]) + (f"\n  ... and {len(drift) - _SHOWN} more" if len(drift) > _SHOWN else "")
        raise LockDriftError(
            f"{len(drift)} files of {what} differ from {lock_file}:\n  {shown}\n"
            "Nothing was published from them. If the upstream change is expected, accept it by locking again "
            f"(`bihmf lock`, which records what this run fetched) and rerun; otherwise keep {lock_file} and find out "
            "what changed upstream."
        )
    log.info("every locked file of %s matches %s", what, lock_file)


def _records(downloads: Path, section: Section) -> dict[str, dict[str, str]]:
    """Name -> URL -> digest of every job record of ``section`` under ``downloads``."""
    records = {}
    for path in sorted((downloads / "seen" / section.folder).glob("*.json")):
        content = json.loads(path.read_text())
        records[content[section.record_key]] = dict(sorted(content["files"].items()))
    return records


def write_lock(downloads: Path, lock_file: Path) -> dict[str, dict[str, int]]:
    """Write ``lock_file`` from every job's seen record; return section key -> name -> files locked.

    Names without a record (not downloaded here) keep their entries from an existing lock,
    so a lock can be completed dataset by dataset.
    """
    records = {section.key: _records(downloads, section) for section in SECTIONS}
    if not any(records.values()):
        raise DownloadError(f"nothing to lock: no download records under {downloads / 'seen'}; run the downloads first")
    sections = read_lock(lock_file) if lock_file.exists() else {section.key: {} for section in SECTIONS}
    for key, found in records.items():
        sections[key].update(found)
    header = (
        "# bihmf lock file: sha256 of every file the downloads fetched, by dataset (or ESM checkpoint) and URL.\n"
        "# Written by `bihmf lock`; download jobs compare what they fetch with it. Share it with the config.\n"
    )
    content = {"version": LOCK_VERSION, **{key: dict(sorted(names.items())) for key, names in sections.items() if names or key == DATASETS.key}}
    write_text_atomic(lock_file, header + yaml.safe_dump(content, sort_keys=False, width=1000))
    return {key: {name: len(files) for name, files in names.items()} for key, names in sections.items()}
