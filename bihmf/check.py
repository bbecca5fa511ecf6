"""``bihmf check``: verify every intermediate of a workflow folder against what was written.

Protein tables, ESM cache shards and indexes, and every run's files are read in full: Parquet
pages against their checksums, protein values against their physical ranges, shard metadata
against the cache's index, run records and checkpoints by parsing them. A damaged file is
listed with the reason and the rule that rebuilds it; ``--remove`` deletes it, and since
``snakemake all`` asks for every such file (rules/integrity.smk), the next run rebuilds exactly
those and what depends on them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bihmf.data.schema import read_proteins
from bihmf.esm_cache import SHARED_KEYS, file_metadata
from bihmf.integrity import DamagedFile, load_checkpoint, rebuilt_by, verify_parquet
from bihmf.layout import INDEX_NAME
from bihmf.run import (
    LAST_CHECKPOINT,
    METRICS_FILE,
    MODEL_FILE,
    TEST_PREDICTIONS_FILE,
    read_record,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Damage:
    path: Path
    reason: str

    @property
    def rule(self) -> str | None:
        return rebuilt_by(self.path)


def _shard(path: Path) -> None:
    verify_parquet(path)
    index = path.parent / INDEX_NAME
    if index.exists():
        ours, theirs = file_metadata(path), file_metadata(index)
        differing = [key for key in SHARED_KEYS if ours.get(key) != theirs.get(key)]
        if differing:
            raise ValueError(f"metadata {differing} differs from {index}")


def _run_files(folder: Path) -> Iterator[tuple[Path, Callable[[Path], object]]]:
    yield folder / METRICS_FILE, read_record
    yield folder / MODEL_FILE, load_checkpoint
    yield folder / LAST_CHECKPOINT, load_checkpoint
    yield folder / TEST_PREDICTIONS_FILE, verify_parquet


def checks(root: Path) -> Iterator[tuple[Path, Callable[[Path], object]]]:
    """(file, how to verify it) of every intermediate present under ``root``."""
    results = root / "results"
    for path in sorted(results.glob("data/*/proteins.parquet")):
        yield path, read_proteins
    for path in sorted(results.glob("embeddings/*/*/shard-*-of-*.parquet")):
        yield path, _shard
    for path in sorted(results.glob(f"embeddings/*/*/{INDEX_NAME}")):
        yield path, verify_parquet
    folders = sorted({p.parent for pattern in ("runs/*/*/*/seed*/*", "ablations/*/*/*/*/*/seed*/*") for p in results.glob(pattern)})
    for folder in folders:
        yield from ((path, verify) for path, verify in _run_files(folder) if path.exists())


def find_damage(root: Path) -> tuple[int, list[Damage]]:
    """How many files were checked, and the damaged ones with their reason."""
    checked, damage = 0, []
    for path, verify in checks(root):
        checked += 1
        try:
            verify(path)
        except DamagedFile as err:
            damage.append(Damage(path, err.reason))
        except Exception as err:  # noqa: BLE001 (whatever a reader meets in a damaged file, it is damage to report)
            damage.append(Damage(path, " ".join(str(err).removeprefix(f"{path}: ").split())))
    return checked, damage


def run_check(root: Path, remove: bool) -> int:
    """Print the damaged files (and remove them when asked); 0 when nothing damaged is left."""
    checked, damage = find_damage(root)
    for entry in damage:
        rebuild = f" (rebuilt by rule {entry.rule})" if entry.rule else ""
        print(f"DAMAGED {entry.path}{rebuild}: {entry.reason}")
        if remove:
            entry.path.unlink()
            print(f"removed {entry.path}")
    print(f"{checked} files checked under {root / 'results'}, {len(damage)} damaged"
          + ("; removed, `snakemake all` rebuilds them and what depends on them" if remove and damage
             else "; `bihmf check --remove` deletes them so that `snakemake all` rebuilds them" if damage else ""))
    return 0 if remove or not damage else 1
