"""Nothing read is silently wrong: checksummed Parquet, damaged files named, inputs range-checked.

Every Parquet file the workflow writes for a later stage (protein tables, ESM cache shards and
indexes, test predictions) carries a CRC32 per data page (``WRITE_OPTIONS``), and every reader
verifies them (:func:`read_table`, :func:`parquet_file`). A flipped bit anywhere in the values is
then an error naming the file and the rule that rebuilds it, never a wrong number that training
uses. A damaged footer or a truncated file fails the same way (pyarrow's "magic bytes not found"
gains the path).

The values that enter training and prediction are also range-checked per protein
(:func:`check_record`, :func:`check_embeddings`): finite where they must be, coordinates within
what a structure file can hold. This catches what no checksum can: a file written wrong, or one
from before checksums were written.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from bihmf.data.schema import ProteinRecord

# what every writer of a workflow Parquet file passes (pq.write_table, pq.ParquetWriter)
WRITE_OPTIONS = {"write_page_checksum": True}
# the largest coordinate magnitude (Å) a structure can have: PDB's fixed columns hold
# -999.999..9999.999, and mmCIF files of real structures stay inside that too
MAX_COORDINATE = 1e4
# which rule rebuilds a workflow file, by the path's tail (Path.match)
REBUILT_BY = (
    ("results/embeddings/*/*/shard-*-of-*.parquet", "embed"),
    ("results/embeddings/*/*/index.parquet", "embed_index"),
    ("results/data/*/proteins.parquet", "preprocess"),
    ("results/runs/*/*/*/seed*/*", "train"),
    ("results/ablations/*/*/*/*/*/seed*/*", "train_ablation"),
)


class DamagedFile(ValueError):
    """A file whose bytes do not match what was written, or that cannot be read at all."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class OutOfRange(ValueError):
    """A value that cannot be physical (a NaN label, a coordinate of 1e23 Å), with the protein."""


def rebuilt_by(path: Path) -> str | None:
    """The Snakemake rule that writes ``path``, when it is a workflow file."""
    return next((rule for pattern, rule in REBUILT_BY if Path(path).match(pattern)), None)


def damaged(path: Path, reason: object) -> DamagedFile:
    """The error for a damaged file: the file, why, and how to get it rebuilt."""
    rule = rebuilt_by(path)
    fix = (f"`bihmf check --remove` deletes it and the next `snakemake all` reruns rule {rule} for it"
           if rule else "restore or rewrite it")
    said = " ".join(str(reason).split())  # pyarrow's messages span lines
    return DamagedFile(f"{path}: damaged or unreadable ({said}); {fix}", said)


@contextmanager
def reading(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn pyarrow's errors while reading ``path`` (checksum mismatch, truncation, garbage)
    into :class:`DamagedFile` naming it; a missing file stays a FileNotFoundError."""
    try:
        yield
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as err:
        raise damaged(Path(path), err) from err


class CheckedParquetFile(pq.ParquetFile):
    """A ParquetFile that verifies page checksums and names its path in every read error."""

    def __init__(self, path: str | os.PathLike[str], **kwargs: Any):
        self.path = Path(path)
        with reading(path):
            super().__init__(path, page_checksum_verification=True, **kwargs)

    def read_row_group(self, *args: Any, **kwargs: Any) -> pa.Table:
        with reading(self.path):
            return super().read_row_group(*args, **kwargs)

    def read(self, *args: Any, **kwargs: Any) -> pa.Table:
        with reading(self.path):
            return super().read(*args, **kwargs)


def parquet_file(path: str | os.PathLike[str]) -> CheckedParquetFile:
    return CheckedParquetFile(path)


def read_table(path: str | os.PathLike[str], **kwargs: Any) -> pa.Table:
    """``pq.read_table`` with the page checksums verified and errors naming ``path``."""
    with reading(path):
        return pq.read_table(path, page_checksum_verification=True, **kwargs)


def read_metadata(path: str | os.PathLike[str]) -> pq.FileMetaData:
    """A Parquet footer; a truncated file is named, not "magic bytes not found"."""
    with reading(path):
        return pq.read_metadata(path)


def load_checkpoint(path: str | os.PathLike[str]) -> Any:
    """``torch.load`` (weights only, to the CPU); a truncated or garbled file is named, not
    "PytorchStreamReader failed reading zip archive"."""
    import torch  # the readers of checkpoints have it loaded already; the Parquet readers need not

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
        raise damaged(Path(path), err) from err


def verify_parquet(path: Path) -> None:
    """Read every page of ``path`` (one row group at a time: a shard may be larger than memory)."""
    parquet = parquet_file(path)
    for group in range(parquet.num_row_groups):
        parquet.read_row_group(group)


def _bad(values: np.ndarray, allow_nan: bool, bound: float) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    out = np.abs(values) > bound
    return out | (np.isinf(values) if allow_nan else ~np.isfinite(values))


def check_record(record: ProteinRecord, source: str | os.PathLike[str]) -> None:
    """Refuse a protein whose values cannot be physical, naming it and ``source``.

    Coordinates may be NaN (a missing atom) but never infinite or beyond ``MAX_COORDINATE``;
    labels are -1 (unlabelled) or a class index / value; the weight is finite and not negative.
    """
    where = f"{source}: protein {record.protein_id}"
    for name, values in (("coords", record.coords), ("ligand_xyz", record.ligand_xyz)):
        bad = _bad(values, allow_nan=True, bound=MAX_COORDINATE)
        if bad.any():
            raise OutOfRange(f"{where}: {int(bad.sum())} {name} value(s) not a coordinate within ±{MAX_COORDINATE:g} Å "
                             f"(first: {np.asarray(values)[bad].flat[0]!r})")
    if (record.labels < -1).any():
        raise OutOfRange(f"{where}: labels below -1 (the unlabelled mark): {sorted(set(record.labels[record.labels < -1].tolist()))}")
    if not np.isfinite(record.weight) or record.weight < 0:
        raise OutOfRange(f"{where}: weight {record.weight!r} is not a finite, non-negative number")
    if np.isinf(record.target):
        raise OutOfRange(f"{where}: target {record.target!r} is infinite")


def check_embeddings(rows: np.ndarray, protein_id: str, source: str | os.PathLike[str]) -> np.ndarray:
    """``rows`` when every ESM value is finite; else an error naming the protein and ``source``."""
    finite = np.isfinite(rows)
    if not finite.all():
        raise OutOfRange(f"{source}: protein {protein_id}: {int((~finite).sum())} ESM embedding value(s) are not finite")
    return rows


def check_inputs(records: Sequence[ProteinRecord], embeddings: Sequence[np.ndarray | None], source: str | os.PathLike[str]) -> None:
    """Range-check what enters a model: each protein's values and, where it has them, its ESM rows."""
    for record, rows in zip(records, embeddings, strict=True):
        check_record(record, source)
        if rows is not None:
            check_embeddings(rows, record.protein_id, source)
