"""Robust, verifiable downloads for every dataset/checkpoint rule.

A benchmark is only reproducible if its inputs are byte-identical across machines and years,
so every download goes through one path: stream into ``<dest>.part`` (resumable, because
multi-GB checkpoints over flaky links rarely arrive in one go), check that the body can be
what was asked (not empty, not an HTML page), verify the digest pinned in the config, and only
then rename atomically onto ``dest``. A file at ``dest`` is therefore always complete and
verified; Snakemake never sees a half-written or unverified input. Failures are classified,
because callers treat them differently: :class:`NotFoundError` (the host says the file does
not exist), :class:`TransientError` (a later run may succeed; nothing was cached), any other
:class:`DownloadError` (a refusal or bad configuration that retrying will not fix).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import random
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse
from urllib.request import url2pathname

import requests
from requests.adapters import HTTPAdapter

from bihmf import drive
from bihmf.io import file_digest, parse_checksum

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
"""Read/write granularity: large enough for throughput, small enough to keep memory flat."""

_RETRYABLE_STATUS = frozenset({408, 429})
"""Besides 5xx: request timeout and rate limiting are transient, other 4xx are not."""

_NOT_FOUND_STATUS = frozenset({404, 410})

MAX_WAIT_S = 600.0
"""Longest single wait between attempts, whatever a ``Retry-After`` asks for."""

_CONTENT_RANGE = re.compile(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", re.IGNORECASE)

_HTML_START = re.compile(rb"\s*(?:<!doctype\s+html|<html)", re.IGNORECASE)


class DownloadError(RuntimeError):
    """A download or extraction failed; the message names the URL or archive involved."""


class ChecksumError(DownloadError):
    """The downloaded bytes differ from the pinned digest (corruption or a changed upstream)."""


class NotFoundError(DownloadError):
    """The host answered 404 or 410: the file is not there, and asking again will not change that."""


class TransientError(DownloadError):
    """Every attempt hit a failure a later run may not hit (rate limit, server error, dropped
    connection, empty body or maintenance page); nothing was cached, so a rerun asks again."""


class _Retryable(DownloadError):
    """One attempt failed in a way the next attempt may not; ``retry_after`` is the server's wish."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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


def cache_entry(downloads: Path, url: str, name: str) -> Path:
    """Where the download cache keeps ``url``: ``downloads/<16 hex of its sha256>/<name>``.

    Keyed by the URL as written (before :func:`upstream_url`), so two sources that share a file
    name (PPBS's and BCE's ``table.csv``) never share an entry, and one URL is fetched once.
    """
    return downloads / hashlib.sha256(url.encode()).hexdigest()[:16] / name


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


# --------------------------------------------------------------------------- sessions and waiting


def http_session(connections: int = 1) -> requests.Session:
    """One session for a whole download job, pooling up to ``connections`` kept-alive connections.

    Thousands of structure files from one host reuse a few connections instead of opening one
    (and a TLS handshake) per file; pass it to every :func:`download_file` of the job.
    """
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=max(1, connections), pool_maxsize=max(1, connections))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date); None if absent or unreadable."""
    text = (value or "").strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def backoff_delay(attempt: int, backoff_s: float, retry_after: float | None) -> float:
    """Wait before attempt ``attempt + 1``: exponential with jitter, never less than ``Retry-After``.

    The jitter (0.5x to 1.5x) spreads the retries of parallel workers that failed together, so
    they do not hit a recovering host in one burst again. Capped at :data:`MAX_WAIT_S`.
    """
    delay = backoff_s * 2**attempt * (0.5 + random.random())
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, MAX_WAIT_S)


# --------------------------------------------------------------------------- download one file


def _part_path(dest: Path) -> Path:
    """Where an in-progress download lives; a stable name so a rerun can resume it."""
    return dest.with_name(dest.name + ".part")


@contextmanager
def _exclusive(dest: Path) -> Iterator[None]:
    """Hold ``dest``'s lock file: two jobs asking for one cache entry take turns, never share a ``.part``."""
    with open(dest.with_name(dest.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    checksum: str | None,
    *,
    retries: int = 4,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    session: requests.Session | None = None,
    announce_unpinned: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` and verify it against ``checksum``; return ``dest``.

    ``retries`` is the total number of HTTP attempts, separated by :func:`backoff_delay`.
    ``checksum=None`` is accepted for bootstrapping a config: the computed sha256 is logged as a
    warning so it can be pinned (or recorded by ``bihmf lock``); callers that record digests
    themselves (thousands of structure files, listed in a manifest) pass
    ``announce_unpinned=False`` to keep that to one debug line per file.
    """
    dest = Path(dest)
    expected = parse_checksum(checksum) if checksum is not None else None
    scheme = urlparse(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise DownloadError(f"unsupported URL scheme in {url!r}")
    if retries < 1:
        raise ValueError(f"retries must be >= 1, got {retries}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest):
        if _existing_is_valid(dest, expected):
            return dest
        part = _part_path(dest)
        if scheme == "file":
            _copy_local(url, part, dest)
        elif session is None:
            with http_session() as own_session:
                _download_http(url, part, dest, own_session, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s)
        else:
            _download_http(url, part, dest, session, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s)
        _verify_part(part, url, dest, expected, announce_unpinned)
        os.replace(part, dest)
    log.info("downloaded %s -> %s", url, dest)
    return dest


def _implausible_body(path: Path, dest: Path) -> str | None:
    """Why ``path`` cannot be the file ``dest`` names (empty, or an HTML page), else None.

    Nothing this project downloads is HTML, so an HTML body is a maintenance, login or error
    page answered with status 200; it must never be cached as the file.
    """
    if dest.suffix.lower() in (".html", ".htm"):
        return None
    with path.open("rb") as handle:
        head = handle.read(512)
    if not head:
        return "an empty body"
    if _HTML_START.match(head.removeprefix(b"\xef\xbb\xbf")):
        return "an HTML page"
    return None


def _existing_is_valid(dest: Path, expected: tuple[str, str] | None) -> bool:
    """True if ``dest`` can be reused; a stale/corrupt one is deleted so it can't linger."""
    if not dest.exists():
        return False
    if expected is None:
        # Only a completed download is ever renamed onto dest, so it is at least whole.
        problem = _implausible_body(dest, dest)
        if problem is None:
            log.info("%s exists and no checksum is configured; keeping it", dest)
            return True
        log.warning("%s exists but holds %s; downloading again", dest, problem)
        dest.unlink()
        return False
    algorithm, want = expected
    got = file_digest(dest, algorithm)
    if got == want:
        log.debug("%s already present and verified (%s)", dest, algorithm)
        return True
    log.warning("%s exists but its %s is %s, expected %s; downloading again", dest, algorithm, got, want)
    dest.unlink()
    return False


def _verify_part(part: Path, url: str, dest: Path, expected: tuple[str, str] | None, announce: bool) -> None:
    """Check the finished ``.part``; on mismatch delete it so a rerun starts clean."""
    if expected is None:
        log.log(
            logging.WARNING if announce else logging.DEBUG,
            "no checksum configured for %s; pin it as sha256:%s (or record it with `bihmf lock`)",
            url,
            file_digest(part, "sha256"),
        )
        return
    algorithm, want = expected
    got = file_digest(part, algorithm)
    if got != want:
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"checksum mismatch for {url} (destination {dest}): {algorithm} expected {want}, got {got}"
        )


def _copy_local(url: str, part: Path, dest: Path) -> None:
    """Copy a ``file:`` URL's target into ``part`` (same checks and rename as HTTP)."""
    source = _local_path(url)
    log.info("copying %s -> %s", source, part)
    try:
        src = open(source, "rb")
    except OSError as exc:
        raise DownloadError(f"{url}: cannot read {source}: {exc}") from exc
    with src, open(part, "wb") as dst:
        shutil.copyfileobj(src, dst, CHUNK_SIZE)
    problem = _implausible_body(part, dest)
    if problem is not None:
        part.unlink()
        raise DownloadError(f"{url}: {source} holds {problem}, not {dest.name}")


def _download_http(
    url: str, part: Path, dest: Path, session: requests.Session, *, retries: int, backoff_s: float, timeout_s: float
) -> None:
    """Fill ``part`` with the body of ``url``, retrying transient failures with backoff."""
    last_error: Exception | None = None
    for attempt in range(retries):
        offset = part.stat().st_size if part.exists() else 0
        resume_note = f", resuming at byte {offset}" if offset else ""
        log.info("GET %s (attempt %d/%d%s)", url, attempt + 1, retries, resume_note)
        try:
            _download_once(url, part, dest, offset, session, timeout_s)
            problem = _implausible_body(part, dest)
            if problem is not None:
                part.unlink()
                raise _Retryable(f"the host answered with {problem} instead of {dest.name}")
            return
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,  # body cut short; .part keeps what arrived
            _Retryable,
        ) as exc:
            last_error = exc
            if attempt + 1 < retries:
                delay = backoff_delay(attempt, backoff_s, getattr(exc, "retry_after", None))
                log.warning("attempt %d for %s failed (%s); retrying in %.2f s", attempt + 1, url, exc, delay)
                time.sleep(delay)
    raise TransientError(
        f"giving up on {url} after {retries} attempts (nothing cached; a rerun asks again); last error: {last_error}"
    ) from last_error


def _download_once(url: str, part: Path, dest: Path, offset: int, session: requests.Session, timeout_s: float) -> None:
    """One HTTP attempt: resume ``part`` from ``offset`` if the server honours Range."""
    with _get(session, url, offset, timeout_s) as resp:
        status = resp.status_code
        start, total = _parse_content_range(resp.headers.get("Content-Range"))
        if status == 416 and offset:
            if total == offset:
                log.info("%s: .part already holds all %d bytes", url, offset)
                return
            part.unlink()
            raise _Retryable(f"HTTP 416: server rejected resume at byte {offset}; restarting")
        if status in _RETRYABLE_STATUS or 500 <= status < 600:
            raise _Retryable(f"HTTP {status} {resp.reason}", retry_after_seconds(resp.headers.get("Retry-After")))
        if status in _NOT_FOUND_STATUS:
            raise NotFoundError(f"{url}: HTTP {status} {resp.reason}")
        if status not in (200, 206):
            raise DownloadError(f"{url}: HTTP {status} {resp.reason}")
        if _is_html(resp) and dest.suffix.lower() not in (".html", ".htm"):
            # checked before writing, so a maintenance page never lands in a resumable .part
            raise _Retryable(f"HTTP {status} with an HTML page instead of {dest.name}")
        if status == 206:
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retryable(f"server resumed at byte {start}, expected {offset}; restarting")
            mode = "ab"
        else:
            if offset:
                log.info("%s: server ignored the Range request; restarting from byte 0", url)
            mode = "wb"
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


def _is_html(resp: requests.Response) -> bool:
    return resp.headers.get("Content-Type", "").lower().startswith("text/html")


def _get(session: requests.Session, url: str, offset: int, timeout_s: float) -> requests.Response:
    """Streaming GET of ``url`` from byte ``offset``, passing Google Drive's warning page.

    A Drive URL is first asked without ``Range``: the answer may be the warning page, and the
    resume offset belongs to the confirmed request only (a ranged request for the page could
    make Drive serve a fresh whole file). Identity encoding: byte offsets and digests must refer
    to the file, not a compressed transfer.
    """
    plain = {"Accept-Encoding": "identity"}
    ranged = plain | ({"Range": f"bytes={offset}-"} if offset else {})
    if not drive.is_drive_url(url):
        return _send(session, url, ranged, timeout_s)[0]
    resp, page_url = _send(session, url, plain, timeout_s)
    if not (resp.status_code == 200 and _is_html(resp)):
        if not offset:
            return resp
        resp.close()  # the file itself: ask again from the offset
        return _send(session, url, ranged, timeout_s)[0]
    with resp:
        page = resp.text
        target = drive.confirmation_url(page, page_url, resp.cookies.get_dict())
    if target is None:
        reason = drive.refusal(page) or "an HTML page without a download confirmation (file not shared publicly?)"
        raise DownloadError(f"{url}: Google Drive refuses the download: {reason}")
    log.info("%s: confirming Google Drive download via %s", url, target)
    resp, _ = _send(session, target, ranged, timeout_s)
    if resp.status_code == 200 and _is_html(resp):
        with resp:
            reason = drive.refusal(resp.text) or "it still answers with an HTML page after confirmation"
        raise DownloadError(f"{url}: Google Drive refuses the download: {reason}")
    return resp
