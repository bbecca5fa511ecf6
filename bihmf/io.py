"""Atomic file output (a killed job must never leave a half-written file that looks finished)
and file digests (what a download, a lock file or a checkpoint record compares)."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    The temporary file lives in the same directory so the final ``os.replace`` is atomic
    on POSIX file systems. On any exception the temporary file is removed. ``mkstemp`` creates
    the file private (0600); the result gets the mode a plain ``open`` would give it, so results
    on a shared cluster file system stay readable by the group as the user's umask intends.
    A writer killed with SIGKILL cannot remove its temporary file; the next write of the same
    target removes it (:func:`remove_stale_temporaries`). A full disk, however deep in a
    library it is hit, ends as one :func:`no_space` error naming ``path`` and the space it needs.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, umask_mode(0o666))
        os.replace(tmp, target)
    except OSError as err:
        if not is_no_space(err):
            raise
        raise no_space(target, max(_size(tmp), _size(target))) from err
    finally:
        tmp.unlink(missing_ok=True)


def is_no_space(err: OSError) -> bool:
    """A full disk or quota, also from a library (pyarrow) that reports it in the text only."""
    return err.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(err)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def no_space(target: Path, needed: int) -> OSError:
    """The error a writer meeting a full disk raises: what it wrote, what it needed, what is free.

    ``needed`` is what the writer had written (or, for a rewrite, the old file's size) when the
    disk filled: a lower bound, which is why the message says "about"."""
    free = shutil.disk_usage(target.parent).free
    return OSError(errno.ENOSPC, f"no space left on device writing {target} (needs about {_gb(needed)}; free {_gb(free)})")


def _gb(size: int) -> str:
    return f"{size / 1e9:.2f} GB"


def _temporary_pattern(target: Path) -> re.Pattern[str]:
    """Names :func:`atomic_output` gives ``target``'s temporaries: mkstemp's 8 random characters."""
    return re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9_]{{8}}\.tmp")


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Delete temporary files of ``target`` left by killed writers; return them.

    Safe because one target has one writer at a time (Snakemake locks a job's outputs, and a
    job writes each of its files from one process), so any existing temporary of this target
    belongs to an earlier, dead attempt.
    """
    pattern = _temporary_pattern(target)
    with os.scandir(target.parent) as entries:
        stale = [Path(entry.path) for entry in entries if pattern.fullmatch(entry.name)]
    for entry in stale:
        entry.unlink(missing_ok=True)
    return stale


def _umask() -> int:
    """The process umask (reading it means setting it; it is restored at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def umask_mode(full: int) -> int:
    """The mode a plain create with ``full`` (0o666 file, 0o777 folder) gets under the umask."""
    return full & ~_umask()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; a full disk names the full size it needed."""
    try:
        with atomic_output(path) as tmp:
            tmp.write_bytes(data)
    except OSError as err:
        if not is_no_space(err):
            raise
        raise no_space(Path(path), len(data)) from err


def write_torch_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """``torch.save`` atomically. Serialised in memory first: torch's own file writer turns a full
    disk into "basic_ios::clear: iostream error" without the path; Python's write says ENOSPC."""
    import torch  # only the writers of checkpoints pay for importing torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON atomically (stable diffs between runs)."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike[str], expected: type, what: str) -> Any:
    """The JSON document in ``path``, which must be ``what`` (of type ``expected``); a broken or
    mis-shaped file is a ``ValueError`` naming it."""
    try:
        value = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(value, expected):
        raise ValueError(f"{path}: expected {what}, got {type(value).__name__}")
    return value


def nested_list_array(arrays: list[np.ndarray], value_type: pa.DataType) -> pa.ListArray:
    """Arrow ``list<fixed_size_list<value_type, D>>`` from per-row 2-D arrays [n_i, D].

    pyarrow cannot infer this type from 2-D numpy arrays, and building it from flat buffers
    avoids a slow per-element Python conversion.
    """
    width = arrays[0].shape[1] if arrays else 0
    flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=value_type), width)
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), inner)


# --------------------------------------------------------------------------- digests

HASH_CHUNK = 1 << 20
"""Read granularity when hashing: large enough for throughput, small enough to keep memory flat."""

HEX_LENGTHS = {"sha256": 64, "md5": 32, "git-blob-sha1": 40}


def parse_checksum(spec: str) -> tuple[str, str]:
    """Split ``"<algorithm>:<hex>"`` into ``(algorithm, lower-case hex)``.

    Validated eagerly so a typo in the config fails before any bytes are transferred.
    ``git-blob-sha1`` is supported because it is the only hash GitHub publishes for raw files.
    """
    algorithm, sep, hexdigest = spec.strip().partition(":")
    algorithm = algorithm.lower()
    if not sep or algorithm not in HEX_LENGTHS:
        raise ValueError(
            f"unsupported checksum spec {spec!r}: expected one of "
            f"{', '.join(a + ':<hex>' for a in HEX_LENGTHS)}"
        )
    hexdigest = hexdigest.strip().lower()
    length = HEX_LENGTHS[algorithm]
    if not re.fullmatch(f"[0-9a-f]{{{length}}}", hexdigest):
        raise ValueError(f"malformed checksum spec {spec!r}: {algorithm} needs {length} hex digits")
    return algorithm, hexdigest


def file_digest(path: str | os.PathLike[str], algorithm: str) -> str:
    """Hex digest of a file, streamed so multi-GB checkpoints never need to fit in memory."""
    if algorithm not in HEX_LENGTHS:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    with open(path, "rb") as fh:
        if algorithm == "sha256":
            hasher = hashlib.sha256()
        elif algorithm == "md5":
            hasher = hashlib.md5(usedforsecurity=False)
        else:  # git-blob-sha1: git hashes a "blob <size>\0" header before the content
            hasher = hashlib.sha1(usedforsecurity=False)
            hasher.update(b"blob %d\0" % os.fstat(fh.fileno()).st_size)
        while chunk := fh.read(HASH_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def digest_record(path: Path) -> Path:
    """Where :func:`record_sha256` keeps the digest of ``path``: beside it."""
    return path.with_name(path.name + ".sha256.json")


_SAMPLES = 64
_SAMPLE_BYTES = 1 << 12


def _fingerprint(path: Path, size: int) -> str:
    """sha256 of the first and last MiB and of 64 evenly spaced 4 KiB blocks (a few MB read).

    Cheap enough for every reader; together with the inode it tells a touched file (Snakemake
    sets the mtime of every output after a job) from one rewritten with other bytes.
    """
    hasher = hashlib.sha256()
    offsets = [0, max(0, size - HASH_CHUNK)] + [size * i // _SAMPLES for i in range(_SAMPLES)]
    with open(path, "rb") as fh:
        for offset, length in zip(offsets, [HASH_CHUNK, HASH_CHUNK] + [_SAMPLE_BYTES] * _SAMPLES):
            fh.seek(offset)
            hasher.update(fh.read(length))
    return hasher.hexdigest()


def record_sha256(path: Path, digest: str | None = None) -> str:
    """Hash ``path`` once and record the digest beside it, with what identifies that content.

    Every embed job stamps the checkpoint's sha256 into its shard; hashing a multi-GB checkpoint
    per job is seconds of fixed cost each, so the rule that provides the checkpoint records it.
    The stat is taken before hashing: a file changed while it is hashed no longer matches.
    ``digest``: the sha256 of the bytes just written to ``path`` when the writer already has it
    (the checkpoint job hashed the download it copied), so the file is not read a second time.
    """
    before = path.stat()
    digest = digest or file_digest(path, "sha256")
    write_json_atomic(
        digest_record(path),
        {
            "sha256": digest,
            "size": before.st_size,
            "mtime_ns": before.st_mtime_ns,
            "inode": [before.st_dev, before.st_ino],
            "fingerprint": _fingerprint(path, before.st_size),
        },
    )
    return digest


def _record_vouches(found: dict[str, Any], path: Path, now: os.stat_result) -> bool:
    """The record still describes ``path``: same size and mtime, or (after a touch, which moves
    only the times) the same file on disk with the same sampled content."""
    if found["size"] != now.st_size or not re.fullmatch("[0-9a-f]{64}", found["sha256"]):
        return False
    if found["mtime_ns"] == now.st_mtime_ns:
        return True
    same_file = found.get("inode") == [now.st_dev, now.st_ino]
    return same_file and found.get("fingerprint") == _fingerprint(path, now.st_size)


def recorded_sha256(path: Path) -> str:
    """sha256 of ``path`` from its record while the record still vouches for it, else hashed now.

    A missing, unreadable or stale record only costs the hashing it would have saved; it is never
    trusted for a file replaced or rewritten after it was written. A rewrite in place that keeps
    size, inode and every sampled block is the one change this cannot see.
    """
    record = digest_record(path)
    now = path.stat()
    try:
        found = json.loads(record.read_text())
        fresh = _record_vouches(found, path, now)
    except FileNotFoundError:
        return file_digest(path, "sha256")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("%s: unreadable digest record (%s); hashing %s", record, exc, path)
        return file_digest(path, "sha256")
    if not fresh:
        log.warning("%s does not match %s any more (replaced or rewritten); hashing it", record, path)
        return file_digest(path, "sha256")
    return found["sha256"]
