"""The iframe page: spec §2.3 (exact body with sockjs_url substituted, caching, ETag,
conditional GET) and the iframe route of §1.2. Checklist rows 17, 18, 19, 20, 21."""

import hashlib
import re

import pytest

from sockjs_client import (GET, url, assert_content_type, assert_one_year_cache,
                           assert_no_cookie, assert_no_cors)

TEMPLATE = """<!DOCTYPE html>
<html>
<head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
  <script src="{{ sockjs_url }}"></script>
  <script>
    document.domain = document.domain;
    SockJS.bootstrap_iframe();
  </script>
</head>
<body>
  <h2>Don't panic!</h2>
  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>
</body>
</html>"""


def sockjs_url_of(body):
    m = re.search(r'<script src="([^"]*)"></script>', body)
    assert m, body
    return m.group(1)


def verify_iframe_page(r):
    assert r.status == 200
    assert_content_type(r, "text/html; charset=UTF-8")
    assert_one_year_cache(r)
    assert re.search(r"max-age=[1-9][0-9]{6}", r.header("cache-control"))
    assert r.header("content-length") == str(len(r.body))
    assert_no_cookie(r)
    assert_no_cors(r)
    body = r.body.decode("utf-8")
    sockjs_url = sockjs_url_of(body)
    assert sockjs_url.startswith("/") or sockjs_url.startswith("http")
    expected = TEMPLATE.replace("{{ sockjs_url }}", sockjs_url)
    assert body.strip() == expected
    assert "\r" not in body
    # ETag: quoted lowercase hex MD5 of the body.
    assert r.header("etag") == '"%s"' % hashlib.md5(r.body).hexdigest()
    return body


def test_iframe_page_is_exact_template_with_sockjs_url_substituted():
    """Row 20."""
    body = verify_iframe_page(GET(url("/echo/iframe.html")))
    assert "{{" not in body and "}}" not in body


def test_iframe_body_is_literal_with_lf_line_ends():
    r = GET(url("/echo/iframe.html"))
    body = r.body.decode("utf-8")
    expected = TEMPLATE.replace("{{ sockjs_url }}", sockjs_url_of(body))
    # Only surrounding whitespace may differ from the literal.
    assert body.strip() == expected
    assert body in (expected, expected + "\n")


@pytest.mark.parametrize("name", ["iframe-a.html", "iframe-.html", "iframe-0.1.2.html",
                                  "iframe-0.1.2abc-dirty.2144.html"])
def test_versioned_iframe_urls_serve_the_page(name):
    """Row 21."""
    verify_iframe_page(GET(url("/echo/" + name)))


@pytest.mark.parametrize("name", ["iframe.html", "iframe-a.html", "iframe-.html",
                                  "iframe-0.1.2.html", "iframe-0.1.2abc-dirty.2144.html"])
def test_iframe_query_string_is_ignored(name):
    """Row 19."""
    plain = GET(url("/echo/" + name))
    queried = GET(url("/echo/" + name + "?t=1234abcd"))
    verify_iframe_page(queried)
    assert queried.body == plain.body
    assert queried.header("etag") == plain.header("etag")


@pytest.mark.parametrize("name", ["iframe.htm", "iframe", "IFRAME.HTML", "IFRAME",
                                  "iframe.HTML", "iframe.xml", "iframe-/.html", "iframeXhtml",
                                  "iframe-A.html"])
def test_invalid_iframe_urls_are_404(name):
    """Row 18 (plus: a literal dot before html, lowercase only)."""
    assert GET(url("/echo/" + name)).status == 404


def test_iframe_etag_is_stable_and_conditional_get_gives_304():
    """Row 17."""
    r1 = GET(url("/echo/iframe.html"))
    r2 = GET(url("/echo/iframe.html"))
    etag = r1.header("etag")
    assert etag
    assert etag == r2.header("etag")
    r = GET(url("/echo/iframe.html"), headers={"If-None-Match": etag})
    assert r.status == 304
    assert not r.has("content-type")
    assert r.body == b""
    assert not r.has("content-length"), "304 with Content-Length (§9)"
    assert_no_cookie(r)


def test_iframe_with_other_if_none_match_gives_200():
    r = GET(url("/echo/iframe.html"), headers={"If-None-Match": '"0123"'})
    assert r.status == 200
    verify_iframe_page(r)


def test_iframe_sets_no_cookie_when_cookie_needed():
    r = GET(url("/cookie_needed_echo/iframe.html"), headers={"Cookie": "JSESSIONID=abc"})
    verify_iframe_page(r)
    assert_no_cookie(r)
