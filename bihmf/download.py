"""Robust, verifiable downloads and archive extraction for every dataset/checkpoint rule.

A benchmark is only reproducible if its inputs are byte-identical across machines and years,
so every download goes through one path: stream into ``<dest>.part`` (resumable, because
multi-GB checkpoints over flaky links rarely arrive in one go), verify the digest pinned in
the config, and only then rename atomically onto ``dest``. A file at ``dest`` is therefore
always complete and verified; Snakemake never sees a half-written or unverified input.
"""

from __future__ import annotations

import hashlib
import json
import logging
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import NoReturn
from urllib.parse import parse_qs, unquote, urlencode, urljoin, urlparse, urlunparse
from urllib.request import url2pathname

import requests

from bihmf.io import umask_mode, write_json_atomic

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
"""Read/write granularity: large enough for throughput, small enough to keep memory flat."""

_HEX_LENGTHS = {"sha256": 64, "md5": 32, "git-blob-sha1": 40}

_RETRYABLE_STATUS = frozenset({408, 429})
"""Besides 5xx: request timeout and rate limiting are transient, other 4xx are not."""

_DRIVE_HOSTS = frozenset({"drive.google.com", "drive.usercontent.google.com"})

_CONTENT_RANGE = re.compile(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", re.IGNORECASE)


class DownloadError(RuntimeError):
    """A download or extraction failed; the message names the URL or archive involved."""


class ChecksumError(DownloadError):
    """The downloaded bytes differ from the pinned digest (corruption or a changed upstream)."""


class _TransientError(DownloadError):
    """A failure that a later attempt may not hit (server hiccup, rejected resume)."""


# --------------------------------------------------------------------------- checksums


def parse_checksum(spec: str) -> tuple[str, str]:
    """Split ``"<algorithm>:<hex>"`` into ``(algorithm, lower-case hex)``.

    Validated eagerly so a typo in the config fails before any bytes are transferred.
    ``git-blob-sha1`` is supported because it is the only hash GitHub publishes for raw files.
    """
    algorithm, sep, hexdigest = spec.strip().partition(":")
    algorithm = algorithm.lower()
    if not sep or algorithm not in _HEX_LENGTHS:
        raise ValueError(
            f"unsupported checksum spec {spec!r}: expected one of "
            f"{', '.join(a + ':<hex>' for a in _HEX_LENGTHS)}"
        )
    hexdigest = hexdigest.strip().lower()
    length = _HEX_LENGTHS[algorithm]
    if not re.fullmatch(f"[0-9a-f]{{{length}}}", hexdigest):
        raise ValueError(f"malformed checksum spec {spec!r}: {algorithm} needs {length} hex digits")
    return algorithm, hexdigest


def file_digest(path: str | os.PathLike[str], algorithm: str) -> str:
    """Hex digest of a file, streamed so multi-GB checkpoints never need to fit in memory."""
    if algorithm not in _HEX_LENGTHS:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    with open(path, "rb") as fh:
        if algorithm == "sha256":
            hasher = hashlib.sha256()
        elif algorithm == "md5":
            hasher = hashlib.md5(usedforsecurity=False)
        else:  # git-blob-sha1: git hashes a "blob <size>\0" header before the content
            hasher = hashlib.sha1(usedforsecurity=False)
            hasher.update(b"blob %d\0" % os.fstat(fh.fileno()).st_size)
        while chunk := fh.read(CHUNK_SIZE):
            hasher.update(chunk)
    return hasher.hexdigest()


def digest_record(path: Path) -> Path:
    """Where :func:`record_sha256` keeps the digest of ``path``: beside it."""
    return path.with_name(path.name + ".sha256.json")


def record_sha256(path: Path) -> str:
    """Hash ``path`` once and record the digest beside it, with the size and mtime it belongs to.

    Every embed job stamps the checkpoint's sha256 into its shard; hashing a multi-GB checkpoint
    per job is seconds of fixed cost each, so the rule that provides the checkpoint records it.
    The stat is taken before hashing: a file changed while it is hashed no longer matches.
    """
    before = path.stat()
    digest = file_digest(path, "sha256")
    write_json_atomic(digest_record(path), {"sha256": digest, "size": before.st_size, "mtime_ns": before.st_mtime_ns})
    return digest


def recorded_sha256(path: Path) -> str:
    """sha256 of ``path`` from its record while size and mtime still match it, else hashed now.

    A missing, unreadable or stale record only costs the hashing it would have saved; it is never
    trusted for a file that changed after it was written.
    """
    record = digest_record(path)
    now = path.stat()
    try:
        found = json.loads(record.read_text())
        fresh = (found["size"], found["mtime_ns"]) == (now.st_size, now.st_mtime_ns)
        digest = found["sha256"] if fresh and re.fullmatch("[0-9a-f]{64}", found["sha256"]) else None
    except FileNotFoundError:
        return file_digest(path, "sha256")
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("%s: unreadable digest record (%s); hashing %s", record, exc, path)
        return file_digest(path, "sha256")
    if digest is None:
        log.warning("%s does not match %s any more (size or mtime changed); hashing it", record, path)
        return file_digest(path, "sha256")
    return digest


# --------------------------------------------------------------------------- URLs


def resolve_url(url: str, base_dir: str | os.PathLike[str]) -> str:
    """Turn ``file:relative/path`` into an absolute ``file:///`` URL rooted at ``base_dir``.

    Lets a config shipped with the repository point at bundled archives without knowing
    where the checkout lives. Absolute ``file://`` and http(s) URLs are returned unchanged.
    """
    if not url.lower().startswith("file:") or url[5:].startswith("//"):
        return url
    return (Path(base_dir) / unquote(url[5:])).resolve().as_uri()


def _local_path(url: str) -> Path:
    """Filesystem path of a ``file:`` URL; relative ones are refused to stay CWD-independent."""
    parts = urlparse(url)
    if parts.netloc not in ("", "localhost"):
        raise DownloadError(f"{url}: file URLs on remote hosts are not supported")
    path = Path(url2pathname(parts.path))
    if not path.is_absolute():
        raise ValueError(f"relative file URL {url!r}: resolve it with resolve_url() first")
    return path


# --------------------------------------------------------------------------- upstream override

UPSTREAM_BASE_ENV = "BIHMF_UPSTREAM_BASE"
"""Environment variable that sends every http(s) request to a stand-in upstream (docs/datasets.md)."""

_MAX_REDIRECTS = 10

_announced_bases: set[str] = set()


def upstream_url(url: str) -> str:
    """Where a request for ``url`` really goes: ``$BIHMF_UPSTREAM_BASE/HOST/PATH?QUERY`` when set.

    A rehearsal against a loopback upstream must run the real config unchanged, so the override
    keeps the original host as the first path segment instead of editing URLs in the config.
    ``file:`` URLs and an unset (or empty) variable leave ``url`` as it is.
    """
    base = os.environ.get(UPSTREAM_BASE_ENV, "").rstrip("/")
    parts = urlparse(url)
    if not base or parts.scheme.lower() not in ("http", "https"):
        return url
    if base not in _announced_bases:
        _announced_bases.add(base)
        log.warning("%s is set: every http(s) request goes to %s/<host>/<path> instead", UPSTREAM_BASE_ENV, base)
    rest = parts.path or "/"
    return f"{base}/{parts.netloc}{rest}" + (f"?{parts.query}" if parts.query else "")


def _send(
    session: requests.Session, url: str, headers: dict[str, str], timeout_s: float
) -> tuple[requests.Response, str]:
    """Streaming GET of ``url`` through :func:`upstream_url`; return the response and its URL.

    Redirects are followed here, resolved against the URL as written (not the rewritten one), so
    an absolute ``Location`` on a real host is rewritten too and a relative one stays on its host.
    The returned URL is that logical URL, for anything that resolves links found in the body.
    """
    for _ in range(_MAX_REDIRECTS + 1):
        resp = session.get(upstream_url(url), headers=headers, stream=True, timeout=timeout_s, allow_redirects=False)
        location = resp.headers.get("Location")
        if not (resp.is_redirect and location):
            return resp, url
        resp.close()
        url = urljoin(url, location)
    raise DownloadError(f"{url}: more than {_MAX_REDIRECTS} redirects")


# --------------------------------------------------------------------------- download one file


def _part_path(dest: Path) -> Path:
    """Where an in-progress download lives; a stable name so a rerun can resume it."""
    return dest.with_name(dest.name + ".part")


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    checksum: str | None,
    *,
    retries: int = 4,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    session: requests.Session | None = None,
) -> Path:
    """Download ``url`` to ``dest`` and verify it against ``checksum``; return ``dest``.

    ``retries`` is the total number of HTTP attempts; between them we sleep
    ``backoff_s * 2**attempt``. ``checksum=None`` is accepted for bootstrapping a config:
    the computed sha256 is logged so it can be pinned.
    """
    dest = Path(dest)
    expected = parse_checksum(checksum) if checksum is not None else None
    scheme = urlparse(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise DownloadError(f"unsupported URL scheme in {url!r}")
    if retries < 1:
        raise ValueError(f"retries must be >= 1, got {retries}")
    if _existing_is_valid(dest, expected):
        return dest

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    if scheme == "file":
        _copy_local(url, part)
    elif session is None:
        with requests.Session() as own_session:
            _download_http(url, part, own_session, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s)
    else:
        _download_http(url, part, session, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s)

    _verify_part(part, url, dest, expected)
    os.replace(part, dest)
    log.info("downloaded %s -> %s", url, dest)
    return dest


def _existing_is_valid(dest: Path, expected: tuple[str, str] | None) -> bool:
    """True if ``dest`` can be reused; a stale/corrupt one is deleted so it can't linger."""
    if not dest.exists():
        return False
    if expected is None:
        # Only a completed download is ever renamed onto dest, so it is at least whole.
        log.info("%s exists and no checksum is configured; keeping it", dest)
        return True
    algorithm, want = expected
    got = file_digest(dest, algorithm)
    if got == want:
        log.debug("%s already present and verified (%s)", dest, algorithm)
        return True
    log.warning("%s exists but its %s is %s, expected %s; downloading again", dest, algorithm, got, want)
    dest.unlink()
    return False


def _verify_part(part: Path, url: str, dest: Path, expected: tuple[str, str] | None) -> None:
    """Check the finished ``.part``; on mismatch delete it so a rerun starts clean."""
    if expected is None:
        log.warning(
            "no checksum configured for %s; pin it as sha256:%s", url, file_digest(part, "sha256")
        )
        return
    algorithm, want = expected
    got = file_digest(part, algorithm)
    if got != want:
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"checksum mismatch for {url} (destination {dest}): {algorithm} expected {want}, got {got}"
        )


def _copy_local(url: str, part: Path) -> None:
    """Copy a ``file:`` URL's target into ``part`` (same verify/rename path as HTTP)."""
    source = _local_path(url)
    log.info("copying %s -> %s", source, part)
    try:
        src = open(source, "rb")
    except OSError as exc:
        raise DownloadError(f"{url}: cannot read {source}: {exc}") from exc
    with src, open(part, "wb") as dst:
        shutil.copyfileobj(src, dst, CHUNK_SIZE)


def _download_http(
    url: str, part: Path, session: requests.Session, *, retries: int, backoff_s: float, timeout_s: float
) -> None:
    """Fill ``part`` with the body of ``url``, retrying transient failures with backoff."""
    last_error: Exception | None = None
    for attempt in range(retries):
        offset = part.stat().st_size if part.exists() else 0
        resume_note = f", resuming at byte {offset}" if offset else ""
        log.info("GET %s (attempt %d/%d%s)", url, attempt + 1, retries, resume_note)
        try:
            _download_once(url, part, offset, session, timeout_s)
            return
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,  # body cut short; .part keeps what arrived
            _TransientError,
        ) as exc:
            last_error = exc
            if attempt + 1 < retries:
                delay = backoff_s * 2**attempt
                log.warning("attempt %d for %s failed (%s); retrying in %.2f s", attempt + 1, url, exc, delay)
                time.sleep(delay)
    raise DownloadError(f"giving up on {url} after {retries} attempts; last error: {last_error}") from last_error


def _download_once(url: str, part: Path, offset: int, session: requests.Session, timeout_s: float) -> None:
    """One HTTP attempt: resume ``part`` from ``offset`` if the server honours Range."""
    # identity: byte offsets and digests must refer to the file, not a compressed transfer.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with _get(session, url, headers, timeout_s) as resp:
        status = resp.status_code
        start, total = _parse_content_range(resp.headers.get("Content-Range"))
        if status == 416 and offset:
            if total == offset:
                log.info("%s: .part already holds all %d bytes", url, offset)
                return
            part.unlink()
            raise _TransientError(f"HTTP 416: server rejected resume at byte {offset}; restarting")
        if status in _RETRYABLE_STATUS or 500 <= status < 600:
            raise _TransientError(f"HTTP {status} {resp.reason}")
        if status == 206:
            if start != offset:
                part.unlink(missing_ok=True)
                raise _TransientError(f"server resumed at byte {start}, expected {offset}; restarting")
            mode = "ab"
        elif status == 200:
            if offset:
                log.info("%s: server ignored the Range request; restarting from byte 0", url)
            mode = "wb"
        else:
            raise DownloadError(f"{url}: HTTP {status} {resp.reason}")
        with open(part, mode) as fh:
            for chunk in resp.iter_content(CHUNK_SIZE):
                fh.write(chunk)


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(first byte, total size)`` from a Content-Range header; None where absent or ``*``."""
    match = _CONTENT_RANGE.fullmatch(value or "")
    if match is None:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None, None if total == "*" else int(total))


# --------------------------------------------------------------------------- Google Drive


def _looks_like_drive(url: str) -> bool:
    """Drive host, or a Drive-shaped path (``/uc`` or ``/download`` with an ``id``).

    The path rule keeps the confirm-token flow testable against a loopback server.
    """
    parts = urlparse(url)
    if (parts.hostname or "") in _DRIVE_HOSTS:
        return True
    return parts.path in ("/uc", "/download") and "id" in parse_qs(parts.query)


def _is_html(resp: requests.Response) -> bool:
    return resp.headers.get("Content-Type", "").lower().startswith("text/html")


class _HiddenFormParser(HTMLParser):
    """Collect each ``<form>``'s action and hidden inputs (Drive's "download anyway" page)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "form":
            self.forms.append((attributes.get("action", ""), {}))
            self._in_form = True
        elif tag == "input" and self._in_form and attributes.get("type", "").lower() == "hidden":
            if attributes.get("name"):
                self.forms[-1][1][attributes["name"]] = attributes.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


def _drive_confirmation(resp: requests.Response, page_url: str) -> tuple[str, dict[str, str]] | None:
    """``(url, query params)`` that confirm a Drive large-file warning page, if it has one.

    Old Drive sets a ``download_warning*`` cookie whose value goes into ``confirm``; newer
    Drive serves a form with hidden ``id``/``confirm``/``uuid`` inputs and an ``action`` URL.
    """
    for name, value in resp.cookies.items():
        if name.startswith("download_warning"):
            return page_url, {"confirm": value}
    parser = _HiddenFormParser()
    parser.feed(resp.text)
    for action, fields in parser.forms:
        if "confirm" in fields:
            return urljoin(page_url, action or page_url), fields
    return None


def _with_query(url: str, params: dict[str, str]) -> str:
    """``url`` with ``params`` merged into its query string (later values win)."""
    parts = urlparse(url)
    query = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()} | params
    return urlunparse(parts._replace(query=urlencode(query)))


def _get(session: requests.Session, url: str, headers: dict[str, str], timeout_s: float) -> requests.Response:
    """Streaming GET that transparently passes Google Drive's virus-scan warning page."""
    resp, final_url = _send(session, url, headers, timeout_s)
    if not (resp.status_code == 200 and _is_html(resp) and (_looks_like_drive(url) or _looks_like_drive(final_url))):
        return resp
    with resp:
        confirmation = _drive_confirmation(resp, final_url)
    if confirmation is None:
        raise DownloadError(
            f"{url}: Google Drive returned an HTML page without a download confirmation "
            "(file not shared publicly, or download quota exceeded?)"
        )
    target, params = confirmation
    log.info("%s: confirming Google Drive download via %s", url, target)
    resp, _ = _send(session, _with_query(target, params), headers, timeout_s)
    if resp.status_code == 200 and _is_html(resp):
        resp.close()
        raise DownloadError(f"{url}: Google Drive still returned an HTML page after confirmation")
    return resp


# --------------------------------------------------------------------------- extraction


def safe_extract(archive: str | os.PathLike[str], dest_dir: str | os.PathLike[str]) -> list[Path]:
    """Extract a tar (plain/gz/bz2/xz) or zip archive into ``dest_dir``; return its regular files.

    Archives come from the internet, so every member is checked against the real state of the
    staging directory before it is written (absolute paths, ``..``, links leaving the tree,
    devices). Extraction happens beside ``dest_dir`` and is swapped in only on success, so a
    failure never leaves a partial tree that a rerun would mistake for a finished one. A
    truncated or corrupt archive is an error naming the file (an unpinned checksum cannot catch
    a download cut short). ``dest_dir`` gets the mode a plain ``mkdir`` would give it.
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
                raise DownloadError(f"{archive}: not a tar or zip archive{_truncation_hint(archive)}")
        except (EOFError, tarfile.ReadError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # the disk or the folder failed (full, read-only), not the archive's content
            raise DownloadError(
                f"{archive}: truncated or corrupt archive ({type(exc).__name__}: {exc}); delete it to download it "
                "again, and pin its checksum in the config so a short download is caught before extraction"
            ) from exc
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
    return f" (it starts like a {kind} file: probably a truncated download; delete it to download it again)" if kind else ""


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
