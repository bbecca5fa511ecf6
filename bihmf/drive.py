"""Reading Google Drive's answers: the large-file confirmation page and the refusal pages.

Drive answers a large public file with an HTML warning page instead of the file; the real
transfer needs a second request built from that page. These functions only read pages (no
network), so ``bihmf.download`` decides what to request and every page shape is testable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urljoin, urlparse, urlunparse

DRIVE_HOSTS = frozenset({"drive.google.com", "drive.usercontent.google.com"})

_QUOTA = re.compile(r"quota exceeded|too many users have viewed or downloaded this file", re.IGNORECASE)


def is_drive_url(url: str) -> bool:
    """True for a URL on one of Drive's download hosts."""
    return (urlparse(url).hostname or "") in DRIVE_HOSTS


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


def with_query(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` merged into its query string (``params`` win)."""
    parts = urlparse(url)
    query = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()} | dict(params)
    return urlunparse(parts._replace(query=urlencode(query)))


def confirmation_url(page: str, page_url: str, cookies: Mapping[str, str]) -> str | None:
    """The URL that confirms a Drive warning page, or None when the page offers none.

    Today's page is a form whose ``action`` is ``https://drive.usercontent.google.com/download``
    with hidden ``id``/``export``/``confirm``/``uuid`` inputs; older Drive set a
    ``download_warning*`` cookie whose value goes into ``confirm`` on the same URL.
    """
    parser = _HiddenFormParser()
    parser.feed(page)
    for action, fields in parser.forms:
        if "confirm" in fields or "uuid" in fields:
            return with_query(urljoin(page_url, action or page_url), fields)
    for name, value in cookies.items():
        if name.startswith("download_warning"):
            return with_query(page_url, {"confirm": value})
    return None


def refusal(page: str) -> str | None:
    """Why Drive refuses the file, when the page says so in a way we recognise."""
    if _QUOTA.search(page):
        return (
            "download quota exceeded (too many downloads of this file recently); Drive lifts it after "
            "a while, often a day: rerun later, or download the file in a browser and set its url to "
            "file:<path> in the config"
        )
    return None
