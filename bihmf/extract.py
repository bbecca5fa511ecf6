"""Safe extraction of downloaded archives.

Archives come from the internet, so nothing in one may write outside its destination, and a
failure must never leave a partial tree that a rerun would mistake for a finished one.
"""

from __future__ import annotations

import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import NoReturn

from bihmf.download import DownloadError
from bihmf.io import umask_mode


class ArchiveError(DownloadError):
    """The file is not a readable archive (truncated, corrupt, or not an archive at all)."""


def safe_extract(archive: str | os.PathLike[str], dest_dir: str | os.PathLike[str]) -> list[Path]:
    """Extract a tar (plain/gz/bz2/xz) or zip archive into ``dest_dir``; return its regular files.

    Archives come from the internet, so every member is checked against the real state of the
    staging directory before it is written (absolute paths, ``..``, links leaving the tree,
    devices). Extraction happens beside ``dest_dir`` and is swapped in only on success, so a
    failure never leaves a partial tree that a rerun would mistake for a finished one. A
    truncated or corrupt archive is an error naming the file (an unpinned checksum cannot catch
    a download cut short): :class:`ArchiveError`. ``dest_dir`` gets the mode a plain ``mkdir`` would give it.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".extracting", dir=dest_dir.parent))
    try:
        os.chmod(staging, umask_mode(0o777))  # mkdtemp makes it 0700, private to the user
        root = os.path.realpath(staging)
        try:
            if tarfile.is_tarfile(archive):
                _extract_tar(archive, root)
            elif zipfile.is_zipfile(archive):
                _extract_zip(archive, root)
            else:
                raise ArchiveError(f"{archive}: not a tar or zip archive{_truncation_hint(archive)}")
        except (EOFError, tarfile.ReadError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # the disk or the folder failed (full, read-only), not the archive's content
            raise ArchiveError(f"{archive}: truncated or corrupt archive ({type(exc).__name__}: {exc})") from exc
        _swap_into_place(staging, dest_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _regular_files(dest_dir)


ARCHIVE_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"PK\x03\x04": "zip"}


def _truncation_hint(archive: Path) -> str:
    """A file that starts like an archive but cannot be opened as one was most likely cut short."""
    with archive.open("rb") as handle:
        head = handle.read(8)
    kind = next((name for magic, name in ARCHIVE_MAGIC.items() if head.startswith(magic)), None)
    return f" (it starts like a {kind} file: probably a truncated download)" if kind else ""


def _reject(archive: Path, member: str, reason: str) -> NoReturn:
    raise DownloadError(f"{archive}: refusing to extract member {member!r}: {reason}")


def _within(root: str, path: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _check_member_path(archive: Path, root: str, member: str, path: str, what: str = "path") -> None:
    """Reject an absolute ``path`` or one resolving (through links already on disk) outside root."""
    if path.startswith("/") or os.path.isabs(path):
        _reject(archive, member, f"absolute {what} {path!r}")
    if not _within(root, os.path.realpath(os.path.join(root, path))):
        _reject(archive, member, f"{what} {path!r} escapes the destination directory")


def _check_symlink(archive: Path, root: str, name: str, linkname: str) -> None:
    """A symlink's target is relative to its own directory and must stay inside root."""
    if os.path.isabs(linkname):
        _reject(archive, name, f"symlink to absolute path {linkname!r}")
    parent = os.path.realpath(os.path.join(root, os.path.dirname(name)))
    if not _within(root, os.path.realpath(os.path.join(parent, linkname))):
        _reject(archive, name, f"symlink target {linkname!r} escapes the destination directory")


def _extract_tar(archive: Path, root: str) -> None:
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = member.name
            if member.ischr() or member.isblk() or member.isfifo():
                _reject(archive, name, "device or FIFO member")
            if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
                _reject(archive, name, f"unsupported member type {member.type!r}")
            _check_member_path(archive, root, name, name)
            if member.issym():
                _check_symlink(archive, root, name, member.linkname)
            elif member.islnk():
                _check_member_path(archive, root, name, member.linkname, "hardlink target")
            try:
                # Directory attributes are skipped: a read-only directory would block its
                # own later members when extracting one member at a time.
                tar.extract(member, root, set_attrs=not member.isdir(), filter="data")
            except tarfile.FilterError as exc:
                _reject(archive, name, str(exc))


def _zip_member_kind(archive: Path, info: zipfile.ZipInfo) -> str:
    """``"symlink"`` or ``"regular"``; Unix special files are refused."""
    mode = info.external_attr >> 16
    if info.create_system != 3 or stat.S_IFMT(mode) in (0, stat.S_IFREG, stat.S_IFDIR):
        return "regular"
    if stat.S_ISLNK(mode):
        return "symlink"
    _reject(archive, info.filename, "device, FIFO or socket member")


def _extract_zip(archive: Path, root: str) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = info.filename
            kind = _zip_member_kind(archive, info)
            _check_member_path(archive, root, name, name)
            if kind == "symlink":
                # zipfile would write the link text as a file; recreate the link instead.
                linkname = zf.read(info).decode("utf-8")
                _check_symlink(archive, root, name, linkname)
                link_path = os.path.join(root, name)
                os.makedirs(os.path.dirname(link_path), exist_ok=True)
                os.symlink(linkname, link_path)
            else:
                zf.extract(info, root)


def _swap_into_place(staging: Path, dest_dir: Path) -> None:
    """Move ``staging`` to ``dest_dir``, replacing any previous tree (rename can't overwrite one)."""
    if not os.path.lexists(dest_dir):
        os.replace(staging, dest_dir)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".old", dir=dest_dir.parent))
    try:
        os.rename(dest_dir, trash / dest_dir.name)
        try:
            os.replace(staging, dest_dir)
        except BaseException:
            os.rename(trash / dest_dir.name, dest_dir)
            raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def _regular_files(directory: Path) -> list[Path]:
    """Sorted regular files under ``directory``, not following or listing symlinks."""
    files = []
    for dirpath, _dirnames, filenames in os.walk(directory):
        for filename in filenames:
            path = Path(dirpath, filename)
            if stat.S_ISREG(os.lstat(path).st_mode):
                files.append(path)
    return sorted(files)
