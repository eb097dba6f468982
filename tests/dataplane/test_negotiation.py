"""Whether the proxy's own answers are HTML, and what counts as a browser navigation (SPEC 5):
``Accept`` read as RFC 9110 says (qualities, the most specific range, exact media types), not
as a substring."""

from __future__ import annotations

import pytest

from dataplane import forwarding
from dataplane.http_head import parse_request_head


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),  # a browser
        (b"application/json;q=0.9, text/html", True),  # HTML preferred, though listed second
        (b"TEXT/HTML", True),
        (b"text/html, application/json", True),  # a tie: the one named first
        (b"text/*", True),
        (b"text/html;level=1", True),  # parameters aside
        (b"application/json, text/html", False),
        (b"*/*;q=0.8, text/html;q=0.5", False),  # JSON (through */*) preferred
        (b"text/html;q=0", False),  # HTML refused outright
        (b"text/html;q=0, */*", False),  # the most specific range decides
        (b"text/htmlx", False),
        (b"text/plain; x=text/html", False),  # named only inside a parameter
        (b"*/*", False),  # curl and most API clients: JSON
        (b"application/json", False),
        (b"", False),
        (None, False),
    ],
)
def test_the_client_prefers_html(accept, html):
    assert forwarding.prefers_html(accept) is html


def _get(*fields: str, method: str = "GET"):
    head = f"{method} / HTTP/1.1\r\nHost: h\r\n" + "".join(f"{x}\r\n" for x in fields) + "\r\n"
    return parse_request_head(head.encode(), 100)


@pytest.mark.parametrize(
    ("fields", "navigation"),
    [
        (("Sec-Fetch-Mode: navigate",), True),
        (("Accept: text/html",), True),
        (("Accept: */*;q=0.8, text/html;q=0.5",), True),  # names it, acceptable
        # either condition is enough, as the spec's "or" says: a fetch() asking for HTML too
        (("Sec-Fetch-Mode: cors", "Accept: text/html"), True),
        (("Sec-Fetch-Mode: cors", "Accept: */*"), False),
        (("Accept: */*",), False),  # an XHR or curl: text/html only through a wildcard
        (("Accept: text/*",), False),
        (("Accept: text/html;q=0",), False),
        (("Accept: text/htmlx",), False),
        (("Accept: text/plain; x=text/html",), False),
        ((), False),
    ],
)
def test_a_browser_navigation(fields, navigation):
    assert forwarding.is_navigation(_get(*fields)) is navigation


def test_only_a_get_is_a_navigation():
    assert not forwarding.is_navigation(_get("Sec-Fetch-Mode: navigate", "Accept: text/html", method="POST"))
