"""Tests for bihmf.download against a real loopback HTTP server (no internet needed)."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
import subprocess
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from bihmf.download import (
    MAX_WAIT_S,
    ChecksumError,
    DownloadError,
    TransientError,
    backoff_delay,
    download_file,
    resolve_url,
    retry_after_seconds,
    upstream_url,
)
from bihmf.extract import safe_extract
from bihmf.io import file_digest, parse_checksum

PAYLOAD = bytes(range(256)) * 40 + b"tail"  # 10 244 bytes, not a multiple of anything tidy
SHA256 = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()
BIG = bytes(range(251)) * 12_000  # ~2.9 MiB: more than two of download_file's 1 MiB chunks
BIG_SHA256 = "sha256:" + hashlib.sha256(BIG).hexdigest()
DRIVE_TOKEN = "t0k3n"
DRIVE_UUID = "abc-123"
UPSTREAM_HOST = "upstream.test"

# --------------------------------------------------------------------------- fake server


class _Handler(BaseHTTPRequestHandler):
    """Endpoints:

    /files/x        PAYLOAD with Range support (206/416)
    /norange/x      PAYLOAD, always 200 (ignores Range)
    /flaky/N/x      503 for the first N requests to this path, then like /files
    /truncate/x     BIG: first request sends 2.5 MiB with the full Content-Length and hangs up,
                    then BIG with Range support
    /missing        404
    /ratelimit/N/x  429 with Retry-After: 1 for the first N requests, then like /files
    /maintenance/x  200 with an HTML page;  /empty/x  200 with an empty body
    /slow/x         PAYLOAD in four pieces 50 ms apart (long enough for two clients to overlap)
    /uc?id=viacookie  Drive warning page + download_warning cookie; confirm=<token> + cookie -> file
    /uc?id=viaform    today's Drive warning page: a form with hidden id/export/confirm/uuid inputs
                    whose action is https://drive.usercontent.google.com/download
    /download?...     file if id/confirm/uuid match the form
    /uc?id=quota      Drive's quota-exceeded page
    /uc?id=private    Drive HTML page without any token
    /<host>/...     the same endpoints as seen through BIHMF_UPSTREAM_BASE (a host as first segment),
                    plus /upstream.test/moved/abs and /moved/rel: 301 to the host's /files/data.bin
                    with an absolute https:// and a host-relative Location
    """

    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # silence stderr
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        parts = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self.server.lock:
            self.server.requests.append((self.path, dict(self.headers)))
            seen = self.server.hits[parts.path] = self.server.hits.get(parts.path, 0) + 1
        segments = parts.path.strip("/").split("/")
        if "." in segments[0]:  # a host: the request came through BIHMF_UPSTREAM_BASE
            segments = segments[1:] or [""]
        head = segments[0]
        if head == "moved":
            location = "https://upstream.test/files/data.bin" if segments[1] == "abs" else "/files/data.bin"
            self.send_response(301)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif head == "ratelimit":
            if seen <= int(segments[1]):
                self._send(429, b"slow down", content_type="text/plain", extra={"Retry-After": "1"})
            else:
                self._serve_range(PAYLOAD)
        elif head == "maintenance":
            self._send(200, b"<!DOCTYPE html><html><body>Back soon</body></html>", content_type="text/html")
        elif head == "empty":
            self._send(200, b"")
        elif head == "slow":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            for piece in range(0, len(PAYLOAD), len(PAYLOAD) // 4 + 1):
                self.wfile.write(PAYLOAD[piece : piece + len(PAYLOAD) // 4 + 1])
                self.wfile.flush()
                time.sleep(0.05)
        elif head == "files":
            self._serve_range(PAYLOAD)
        elif head == "norange":
            self._send(200, PAYLOAD)
        elif head == "flaky":
            if seen <= int(segments[1]):
                self._send(503, b"busy", content_type="text/html")
            else:
                self._serve_range(PAYLOAD)
        elif head == "truncate":
            if seen == 1:
                self.send_response(200)
                self.send_header("Content-Length", str(len(BIG)))
                self.end_headers()
                self.wfile.write(BIG[: 5 << 19])
                self.wfile.flush()
                self.close_connection = True
            else:
                self._serve_range(BIG)
        elif head == "uc":
            self._drive_uc(query)
        elif head == "download":
            ok = query == {"id": "viaform", "export": "download", "confirm": DRIVE_TOKEN, "uuid": DRIVE_UUID}
            self._serve_range(PAYLOAD) if ok else self._send(403, b"bad form")
        else:
            self._send(404, b"not found", content_type="text/html")

    def _drive_uc(self, query: dict[str, str]) -> None:
        file_id = query.get("id")
        if file_id == "viacookie":
            cookie = f"download_warning_123_{file_id}={DRIVE_TOKEN}"
            if query.get("confirm") == DRIVE_TOKEN and cookie in self.headers.get("Cookie", ""):
                self._send(200, PAYLOAD)
            else:
                page = b"<html><body>Google Drive can't scan this file for viruses.</body></html>"
                self._send(200, page, content_type="text/html; charset=utf-8", cookie=f"{cookie}; Path=/")
        elif file_id == "viaform":
            page = (
                "<html><body><p>Google Drive can't scan this file for viruses.</p>"
                '<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
                '<input type="submit" value="Download anyway"/>'
                '<input type="hidden" name="id" value="viaform">'
                '<input type="hidden" name="export" value="download">'
                f'<input type="hidden" name="confirm" value="{DRIVE_TOKEN}">'
                f'<input type="hidden" name="uuid" value="{DRIVE_UUID}">'
                "</form></body></html>"
            ).encode()
            self._send(200, page, content_type="text/html; charset=utf-8")
        elif file_id == "quota":
            page = b"<html><title>Google Drive - Quota exceeded</title><body>Too many users have viewed or downloaded this file recently.</body></html>"
            self._send(200, page, content_type="text/html; charset=utf-8")
        else:
            self._send(200, b"<html><body>Sign in</body></html>", content_type="text/html")

    def _serve_range(self, body: bytes) -> None:
        header = self.headers.get("Range")
        if header is None:
            self._send(200, body)
            return
        start = int(header.removeprefix("bytes=").rstrip("-"))
        if start >= len(body):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send(206, body[start:], content_range=f"bytes {start}-{len(body) - 1}/{len(body)}")

    def _send(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/octet-stream",
        content_range: str | None = None,
        cookie: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if content_range:
            self.send_header("Content-Range", content_range)
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.hits: dict[str, int] = {}

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def _download(url: str, dest: Path, checksum: str | None = SHA256, **kwargs: object) -> Path:
    kwargs.setdefault("backoff_s", 0.01)
    kwargs.setdefault("timeout_s", 5.0)
    return download_file(url, dest, checksum, **kwargs)  # type: ignore[arg-type]


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


# --------------------------------------------------------------------------- checksums


def test_parse_checksum_normalises_and_validates() -> None:
    digest = hashlib.sha256(b"").hexdigest()
    assert parse_checksum(f"sha256:{digest.upper()}") == ("sha256", digest)
    assert parse_checksum("md5:" + "A" * 32) == ("md5", "a" * 32)
    assert parse_checksum("git-blob-sha1:" + "0" * 40) == ("git-blob-sha1", "0" * 40)
    for bad in ("sha1:" + "0" * 40, "sha256:xyz", "sha256:" + "0" * 63, "0" * 64, "md5:"):
        with pytest.raises(ValueError, match="checksum spec") as info:
            parse_checksum(bad)
        assert repr(bad) in str(info.value)


def test_git_blob_sha1_matches_git_hash_object(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(PAYLOAD)
    git = subprocess.run(
        ["git", "hash-object", "--stdin"], input=PAYLOAD, capture_output=True, check=True
    ).stdout.decode().strip()
    assert file_digest(path, "git-blob-sha1") == git


# --------------------------------------------------------------------------- http


def test_download_file_sha256_ok(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "data.bin"
    assert _download(f"{server.base}/files/data.bin", dest) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not _part(dest).exists()


def test_download_file_checksum_mismatch_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    wrong = "sha256:" + "0" * 64
    url = f"{server.base}/files/data.bin"
    with pytest.raises(ChecksumError) as info:
        _download(url, dest, wrong)
    message = str(info.value)
    for needle in (url, str(dest), "sha256", "0" * 64, hashlib.sha256(PAYLOAD).hexdigest()):
        assert needle in message
    assert not dest.exists() and not _part(dest).exists()


def test_download_file_md5_and_git_blob_sha1(server: _Server, tmp_path: Path) -> None:
    git = subprocess.run(
        ["git", "hash-object", "--stdin"], input=PAYLOAD, capture_output=True, check=True
    ).stdout.decode().strip()
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    _download(f"{server.base}/files/a", tmp_path / "a", f"md5:{md5}")
    _download(f"{server.base}/files/b", tmp_path / "b", f"git-blob-sha1:{git}")
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes() == PAYLOAD


def test_download_file_retries_503_then_succeeds(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    _download(f"{server.base}/flaky/2/data.bin", dest, retries=4)
    assert dest.read_bytes() == PAYLOAD
    assert server.hits["/flaky/2/data.bin"] == 3


def test_download_file_gives_up_after_retries(server: _Server, tmp_path: Path) -> None:
    url = f"{server.base}/flaky/99/data.bin"
    with pytest.raises(DownloadError, match="503") as info:
        _download(url, tmp_path / "data.bin", retries=3)
    assert url in str(info.value) and "3 attempts" in str(info.value)
    assert server.hits["/flaky/99/data.bin"] == 3


def test_download_file_404_fails_fast(server: _Server, tmp_path: Path) -> None:
    url = f"{server.base}/missing"
    with pytest.raises(DownloadError, match="404") as info:
        _download(url, tmp_path / "data.bin", retries=4)
    assert url in str(info.value)
    assert not isinstance(info.value, ChecksumError)
    assert server.hits["/missing"] == 1


def test_download_file_resumes_existing_part(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    _part(dest).write_bytes(PAYLOAD[:1000])
    _download(f"{server.base}/files/data.bin", dest)
    assert dest.read_bytes() == PAYLOAD
    assert [h.get("Range") for _, h in server.requests] == ["bytes=1000-"]


def test_download_file_restarts_when_server_ignores_range(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    _part(dest).write_bytes(b"garbage that must not survive")
    _download(f"{server.base}/norange/data.bin", dest)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[0][1].get("Range") == "bytes=29-"


def test_download_file_resumes_after_truncated_body(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    _download(f"{server.base}/truncate/data.bin", dest, BIG_SHA256)
    assert dest.read_bytes() == BIG
    # the two whole 1 MiB chunks that arrived are kept; only the torn one is fetched again
    ranges = [h.get("Range") for _, h in server.requests]
    assert ranges == [None, f"bytes={2 << 20}-"]


def test_download_file_complete_part_is_accepted_on_416(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    _part(dest).write_bytes(PAYLOAD)
    _download(f"{server.base}/files/data.bin", dest)
    assert dest.read_bytes() == PAYLOAD
    assert server.hits["/files/data.bin"] == 1


def test_download_file_existing_valid_dest_makes_no_request(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    dest.write_bytes(PAYLOAD)
    _download(f"{server.base}/files/data.bin", dest)
    assert server.requests == []


def test_download_file_existing_invalid_dest_is_replaced(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"stale")
    _download(f"{server.base}/files/data.bin", dest)
    assert dest.read_bytes() == PAYLOAD
    assert server.hits["/files/data.bin"] == 1


def test_download_file_without_checksum_logs_sha256(
    server: _Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="bihmf.download"):
        _download(f"{server.base}/files/data.bin", tmp_path / "data.bin", None)
    assert SHA256 in caplog.text


def test_download_file_honours_retry_after(server: _Server, tmp_path: Path) -> None:
    started = time.monotonic()
    _download(f"{server.base}/ratelimit/1/data.bin", tmp_path / "data.bin", retries=3)  # backoff_s is 0.01
    assert time.monotonic() - started >= 0.95
    assert server.hits["/ratelimit/1/data.bin"] == 2


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 12, 7, 12, 0, 0, tzinfo=timezone.utc)
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None, now) is None


def test_backoff_is_exponential_with_jitter_and_bounded() -> None:
    delays = [backoff_delay(2, 1.0, None) for _ in range(50)]
    assert all(2.0 <= delay < 6.0 for delay in delays) and len(set(delays)) > 1
    assert backoff_delay(0, 0.01, 7.0) >= 7.0  # never sooner than the server asked
    assert backoff_delay(30, 1.0, None) == backoff_delay(0, 0.01, 10 * MAX_WAIT_S) == MAX_WAIT_S


@pytest.mark.parametrize("path", ["maintenance/data.tar.gz", "empty/data.bin"])
def test_an_html_page_or_empty_body_is_never_kept(server: _Server, tmp_path: Path, path: str) -> None:
    dest = tmp_path / Path(path).name
    _part(dest).write_bytes(PAYLOAD[:1000])  # an earlier attempt's bytes must survive a bad answer
    with pytest.raises(TransientError, match="HTML page|empty body") as info:
        _download(f"{server.base}/{path}", dest, None, retries=2)
    assert "nothing cached" in str(info.value)
    assert not dest.exists()
    assert not _part(dest).exists() or _part(dest).read_bytes() == PAYLOAD[:1000]


def test_two_jobs_downloading_one_url_take_turns(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    errors: list[BaseException] = []

    def job() -> None:
        try:
            _download(f"{server.base}/slow/data.bin", dest)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == [] and dest.read_bytes() == PAYLOAD
    assert server.hits["/slow/data.bin"] == 1  # the second found the first one's verified file


def test_make_refuses_python_before_3_11_4_with_a_clear_message(tmp_path: Path) -> None:
    """tar extraction passes filter="data", which Python added in 3.11.4."""
    fake = tmp_path / "python3.11.2"
    fake.write_text(
        "#!/usr/bin/env python3\nimport sys\nsys.version_info = (3, 11, 2, 'final', 0)\n"
        "assert sys.argv[1] == '-c'\ncode = sys.argv[2]\nsys.argv = ['-c']\nexec(code)\n"
    )
    fake.chmod(0o755)
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        ["make", "-C", str(root), "venv", f"PYTHON={fake}", f"VENV={tmp_path / 'venv'}"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "Python >= 3.11.4" in result.stderr and "3.11.2" in result.stderr
    assert not (tmp_path / "venv").exists()


# --------------------------------------------------------------------------- upstream override


@pytest.mark.parametrize("path", ["files/data.bin", "moved/abs", "moved/rel"])
def test_upstream_base_override_sends_every_request_to_the_stand_in(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    monkeypatch.setenv("BIHMF_UPSTREAM_BASE", server.base + "/")
    with caplog.at_level(logging.WARNING, logger="bihmf.download"):
        _download(f"https://{UPSTREAM_HOST}/{path}?x=1", tmp_path / "data.bin")
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    seen = [request for request, _headers in server.requests]
    assert seen[0] == f"/{UPSTREAM_HOST}/{path}?x=1"
    assert seen[-1].partition("?")[0] == f"/{UPSTREAM_HOST}/files/data.bin"  # redirects stay on the stand-in, on their host


def test_upstream_base_override_announces_itself_once(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("BIHMF_UPSTREAM_BASE", f"{server.base}/announce-once")
    with caplog.at_level(logging.WARNING, logger="bihmf.download"):
        for name in ("a", "b"):
            with pytest.raises(DownloadError, match="404"):
                _download(f"https://{UPSTREAM_HOST}/missing/{name}", tmp_path / name)
    assert caplog.text.count("BIHMF_UPSTREAM_BASE is set") == 1


def test_upstream_url_leaves_file_urls_and_unset_base_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BIHMF_UPSTREAM_BASE", raising=False)
    assert upstream_url("https://zenodo.org/records/1?download=1") == "https://zenodo.org/records/1?download=1"
    monkeypatch.setenv("BIHMF_UPSTREAM_BASE", "http://127.0.0.1:9")
    assert upstream_url("https://zenodo.org/records/1/files/a.tar.gz?download=1") == (
        "http://127.0.0.1:9/zenodo.org/records/1/files/a.tar.gz?download=1"
    )
    assert upstream_url("file:///data/a.tar.gz") == "file:///data/a.tar.gz"


# --------------------------------------------------------------------------- Google Drive


@pytest.fixture
def drive(server: _Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """Drive's real URL, answered by the loopback server through the upstream override."""
    monkeypatch.setenv("BIHMF_UPSTREAM_BASE", server.base)
    return "https://drive.google.com/uc?export=download"


@pytest.mark.parametrize("file_id", ["viacookie", "viaform"])
def test_download_file_drive_confirm_flow(server: _Server, drive: str, tmp_path: Path, file_id: str) -> None:
    dest = tmp_path / "drive.bin"
    _download(f"{drive}&id={file_id}", dest)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 2
    assert DRIVE_TOKEN in server.requests[1][0]
    if file_id == "viaform":
        assert server.requests[1][0].startswith("/drive.usercontent.google.com/download?")


def test_drive_resume_sends_range_only_on_the_confirmed_request(server: _Server, drive: str, tmp_path: Path) -> None:
    dest = tmp_path / "drive.bin"
    _part(dest).write_bytes(PAYLOAD[:1000])
    _download(f"{drive}&id=viaform", dest)
    assert dest.read_bytes() == PAYLOAD
    assert [headers.get("Range") for _path, headers in server.requests] == [None, "bytes=1000-"]


def test_drive_quota_page_is_a_clear_error(server: _Server, drive: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="Google Drive refuses the download: download quota exceeded .* rerun later"):
        _download(f"{drive}&id=quota", tmp_path / "drive.bin")
    assert len(server.requests) == 1


def test_download_file_drive_page_without_token_fails(server: _Server, drive: str, tmp_path: Path) -> None:
    dest = tmp_path / "drive.bin"
    with pytest.raises(DownloadError, match="Google Drive"):
        _download(f"{drive}&id=private", dest)
    assert len(server.requests) == 1
    assert not dest.exists() and not _part(dest).exists()


# --------------------------------------------------------------------------- file URLs


def test_resolve_url(tmp_path: Path) -> None:
    assert resolve_url("file:demo/a.tar.gz", tmp_path) == (tmp_path / "demo" / "a.tar.gz").as_uri()
    for unchanged in ("file:///abs/a.tar.gz", "https://example.org/a", "http://example.org/a"):
        assert resolve_url(unchanged, tmp_path) == unchanged


def test_download_file_file_urls(tmp_path: Path) -> None:
    source = tmp_path / "src" / "data.bin"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    absolute = tmp_path / "abs.bin"
    assert download_file(source.as_uri(), absolute, SHA256).read_bytes() == PAYLOAD
    relative = tmp_path / "rel.bin"
    download_file(resolve_url("file:src/data.bin", tmp_path), relative, SHA256)
    assert relative.read_bytes() == PAYLOAD
    with pytest.raises(ChecksumError):
        download_file(source.as_uri(), tmp_path / "bad.bin", "sha256:" + "1" * 64)
    assert not (tmp_path / "bad.bin").exists() and not _part(tmp_path / "bad.bin").exists()
    with pytest.raises(DownloadError, match="missing.bin"):
        download_file((tmp_path / "missing.bin").as_uri(), tmp_path / "x.bin", None)


# --------------------------------------------------------------------------- extraction


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def _zip(path: Path, members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in members:
            zf.writestr(info, data)
    return path


def _zip_symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".out."))


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz", "w"])
def test_safe_extract_tar(tmp_path: Path, mode: str) -> None:
    archive = _tar(
        tmp_path / "a.tar",
        [
            (_info("pkg", tarfile.DIRTYPE), None),
            (_info("pkg/a.txt"), b"alpha"),
            (_info("pkg/sub/b.txt"), b"beta"),
            (_info("pkg/link", tarfile.SYMTYPE, "a.txt"), None),
            (_info("pkg/hard", tarfile.LNKTYPE, "pkg/a.txt"), None),
        ],
        mode,
    )
    out = tmp_path / "out"
    files = safe_extract(archive, out)
    assert files == sorted([out / "pkg/a.txt", out / "pkg/hard", out / "pkg/sub/b.txt"])
    assert (out / "pkg/link").read_text() == "alpha" and (out / "pkg/link").is_symlink()
    assert _leftovers(tmp_path) == []


def test_safe_extract_zip_replaces_existing_dest(tmp_path: Path) -> None:
    archive = _zip(
        tmp_path / "a.zip",
        [("pkg/", b""), ("pkg/a.txt", b"alpha"), ("pkg/sub/b.txt", b"beta"), _zip_symlink("pkg/l", "a.txt")],
    )
    out = tmp_path / "out"
    (out / "old").mkdir(parents=True)
    (out / "old" / "stale.txt").write_text("stale")
    files = safe_extract(archive, out)
    assert files == [out / "pkg/a.txt", out / "pkg/sub/b.txt"]
    assert (out / "pkg/sub/b.txt").read_bytes() == b"beta"
    assert os.readlink(out / "pkg/l") == "a.txt"
    assert not (out / "old").exists()
    assert _leftovers(tmp_path) == []


_EVIL_TARS: dict[str, tuple[str, list[tuple[tarfile.TarInfo, bytes | None]]]] = {
    "absolute": ("/tmp/evil.txt", [(_info("/tmp/evil.txt"), b"x")]),
    "traversal": ("pkg/../../evil.txt", [(_info("ok.txt"), b"ok"), (_info("pkg/../../evil.txt"), b"x")]),
    "symlink-out": ("link", [(_info("link", tarfile.SYMTYPE, "../outside"), None)]),
    "symlink-abs": ("link", [(_info("link", tarfile.SYMTYPE, "/etc/passwd"), None)]),
    # each link is harmless lexically, but s2 resolves through s1 to the parent of dest
    "symlink-chain": ("s2", [(_info("s1", tarfile.SYMTYPE, "."), None), (_info("s2", tarfile.SYMTYPE, "s1/.."), None)]),
    # lexically d/../evil.txt is inside dest, but d is a link to dest itself
    "write-through-symlink": (
        "d/../evil.txt",
        [(_info("d", tarfile.SYMTYPE, "."), None), (_info("d/../evil.txt"), b"x")],
    ),
    "hardlink-out": ("hard", [(_info("hard", tarfile.LNKTYPE, "../outside"), None)]),
    "fifo": ("pipe", [(_info("pipe", tarfile.FIFOTYPE), None)]),
    "device": ("dev", [(_info("dev", tarfile.CHRTYPE), None)]),
}


@pytest.mark.parametrize("case", sorted(_EVIL_TARS))
def test_safe_extract_rejects_evil_tar(tmp_path: Path, case: str) -> None:
    member, members = _EVIL_TARS[case]
    archive = _tar(tmp_path / "evil.tar.gz", members)
    out = tmp_path / "out"
    with pytest.raises(DownloadError) as info:
        safe_extract(archive, out)
    assert str(archive) in str(info.value)
    assert repr(member) in str(info.value)
    assert not out.exists() and _leftovers(tmp_path) == []
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


_EVIL_ZIPS: dict[str, tuple[str, list[tuple[zipfile.ZipInfo | str, bytes]]]] = {
    "absolute": ("/tmp/evil.txt", [("/tmp/evil.txt", b"x")]),
    "traversal": ("../evil.txt", [("ok.txt", b"ok"), ("../evil.txt", b"x")]),
    "symlink-out": ("link", [_zip_symlink("link", "../../outside")]),
}


@pytest.mark.parametrize("case", sorted(_EVIL_ZIPS))
def test_safe_extract_rejects_evil_zip(tmp_path: Path, case: str) -> None:
    member, members = _EVIL_ZIPS[case]
    archive = _zip(tmp_path / "evil.zip", members)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous good extraction")
    with pytest.raises(DownloadError) as info:
        safe_extract(archive, out)
    assert str(archive) in str(info.value) and repr(member) in str(info.value)
    assert (out / "keep.txt").read_text() == "previous good extraction"  # untouched on failure
    assert _leftovers(tmp_path) == [] and not (tmp_path / "evil.txt").exists()


def test_safe_extract_rejects_non_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not an archive at all" * 50)
    with pytest.raises(DownloadError, match="not a tar or zip"):
        safe_extract(junk, tmp_path / "out")
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []
