"""CORS and caching headers: spec §8.1 (CORS rule), §8.2 (preflight), §8.3 (no-cache and
one-year caching) and the header matrix of §8.4. Checklist rows 25/26 (see test_info.py),
62, 63, 66."""

import pytest

from sockjs_client import (GET, POST, OPTIONS, WebSocket, open_stream, session_url, url,
                           NO_CACHE, assert_cors, assert_no_cors, assert_no_cache,
                           assert_one_year_cache, assert_no_cookie)

ORIGINS = ["test", "null", "https://example.com:8443"]


def verify_preflight(path, methods, origin):
    r = OPTIONS(path, headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert r.status in (200, 204), r
    assert r.body == b""
    assert_cors(r, origin)
    assert r.header("access-control-allow-methods") == methods
    assert int(r.header("access-control-max-age")) > 1000000
    assert r.header("access-control-max-age") == "31536000"
    assert_one_year_cache(r)
    assert not r.has("content-type")
    assert_no_cookie(r)
    return r


@pytest.mark.parametrize("origin", ["test", "null"])
@pytest.mark.parametrize("suffix", ["/xhr", "/xhr_send"])
def test_xhr_preflight(suffix, origin):
    """Row 62."""
    verify_preflight(url("/echo/abc/abc" + suffix), "OPTIONS, POST", origin)


@pytest.mark.parametrize("origin", ["test", "null"])
def test_xhr_streaming_preflight(origin):
    """Row 66."""
    verify_preflight(url("/echo/abc/abc/xhr_streaming"), "OPTIONS, POST", origin)


@pytest.mark.parametrize("suffix", ["/xhr", "/xhr_send", "/xhr_streaming"])
def test_preflight_sets_no_cookie_when_cookie_needed(suffix):
    r = verify_preflight(url("/cookie_needed_echo/abc/abc" + suffix), "OPTIONS, POST", "test")
    assert_no_cookie(r)


def test_preflight_without_origin_answers_star():
    r = OPTIONS(session_url() + "/xhr")
    assert r.status in (200, 204)
    assert_cors(r, None)


@pytest.mark.parametrize("method,suffix", [("POST", "/xhr"), ("OPTIONS", "/xhr"),
                                           ("OPTIONS", "/xhr_send"), ("GET", "/info")])
def test_request_headers_are_echoed_as_allow_headers(method, suffix):
    """Row 63."""
    path = url("/echo" + suffix) if suffix == "/info" else session_url() + suffix
    r = (GET if method == "GET" else (POST if method == "POST" else OPTIONS))(
        path, headers={"Origin": "test", "Access-Control-Request-Headers": "a, b, c"})
    assert r.header("access-control-allow-headers") == "a, b, c"
    assert_cors(r, "test")


@pytest.mark.parametrize("acrh", ["", None])
def test_empty_or_missing_request_headers_give_no_allow_headers(acrh):
    """Row 63."""
    headers = {"Origin": "test"}
    if acrh is not None:
        headers["Access-Control-Request-Headers"] = acrh
    r = POST(session_url() + "/xhr", headers=headers)
    assert r.status == 200
    assert not r.has("access-control-allow-headers")
    r = OPTIONS(session_url() + "/xhr", headers=headers)
    assert not r.has("access-control-allow-headers")


def _cors_responses(origin):
    """Every CORS-bearing response kind of §8.1, success and error."""
    h = {"Origin": origin} if origin is not None else {}
    s = session_url()
    out = {"info": GET(url("/echo/info"), h), "xhr": POST(s + "/xhr", headers=h),
           "xhr_send": POST(s + "/xhr_send", '["x"]', h),
           "xhr_send_500": POST(s + "/xhr_send", '["x', h),
           "xhr_send_404": POST(session_url() + "/xhr_send", '["x"]', h)}
    with open_stream("POST", session_url() + "/xhr_streaming", h, body=b"") as c:
        out["xhr_streaming"] = c.response
    with open_stream("GET", session_url() + "/eventsource", h) as c:
        out["eventsource"] = c.response
    return out


@pytest.mark.parametrize("origin", ORIGINS)
def test_cors_routes_echo_origin_with_credentials(origin):
    """§8.1: any Origin, including null, is echoed exactly; never *."""
    for name, r in _cors_responses(origin).items():
        try:
            assert_cors(r, origin)
            assert r.header("access-control-allow-origin") != "*"
        except AssertionError as e:
            raise AssertionError("%s: %s" % (name, e))


def test_cors_routes_without_origin_answer_star_without_credentials():
    for name, r in _cors_responses(None).items():
        try:
            assert_cors(r, None)
        except AssertionError as e:
            raise AssertionError("%s: %s" % (name, e))


def test_non_cors_routes_send_no_cors_headers():
    """§8.1: not on the greeting, iframe, htmlfile, jsonp, jsonp_send or WebSocket."""
    h = {"Origin": "test", "Access-Control-Request-Headers": "a"}
    s = session_url()
    rs = {"greeting": GET(url("/echo"), h), "iframe": GET(url("/echo/iframe.html"), h),
          "jsonp": GET(s + "/jsonp?c=x", h),
          "jsonp_send": POST(s + "/jsonp_send", '["x"]', h),
          "jsonp_500": GET(s + "/jsonp", h)}
    with open_stream("GET", session_url() + "/htmlfile?c=x", h) as c:
        rs["htmlfile"] = c.response
    with WebSocket(session_url() + "/websocket", origin="test") as ws:
        rs["websocket"] = ws.response
    for name, r in rs.items():
        try:
            assert_no_cors(r)
        except AssertionError as e:
            raise AssertionError("%s: %s" % (name, e))


def test_no_cache_headers_on_every_transport_response_including_errors():
    """§8.3: exact no-cache Cache-Control, no Expires, no Last-Modified."""
    s = session_url()
    rs = {"info": GET(url("/echo/info")), "xhr": POST(s + "/xhr"),
          "xhr_send": POST(s + "/xhr_send", '["x"]'),
          "xhr_send_500": POST(s + "/xhr_send", "null"),
          "xhr_send_404": POST(session_url() + "/xhr_send", '["x"]'),
          "jsonp": GET(session_url() + "/jsonp?c=x"),
          "jsonp_500": GET(session_url() + "/jsonp?c=("),
          "jsonp_send": POST(s + "/jsonp_send", '["x"]'),
          "jsonp_send_404": POST(session_url() + "/jsonp_send", '["x"]'),
          "htmlfile_500": GET(session_url() + "/htmlfile")}
    for name, path, method in [("xhr_streaming", "/xhr_streaming", "POST"),
                               ("eventsource", "/eventsource", "GET"),
                               ("htmlfile", "/htmlfile?c=x", "GET")]:
        with open_stream(method, session_url() + path, body=b"" if method == "POST"
                         else None) as c:
            rs[name] = c.response
    for name, r in rs.items():
        try:
            assert r.header("cache-control") == NO_CACHE
            assert_no_cache(r)
        except AssertionError as e:
            raise AssertionError("%s: %s" % (name, e))


def test_greeting_404_and_405_send_no_caching_headers():
    """§8.3 (ours): the greeting and 404/405 answers carry no caching headers."""
    for r in (GET(url("/echo")), GET(url("/echo/a/a")), GET(session_url() + "/xhr")):
        assert not r.has("cache-control"), r
        assert not r.has("expires"), r
        assert not r.has("last-modified"), r


def test_404_and_405_send_no_cors():
    for r in (GET(url("/echo/a/a"), {"Origin": "test"}),
              GET(session_url() + "/xhr", {"Origin": "test"})):
        assert_no_cors(r)


def test_vary_origin_is_sent_even_without_origin():
    s = session_url()
    for r in (GET(url("/echo/info")), POST(s + "/xhr"), OPTIONS(s + "/xhr_send")):
        vary = [v.strip().lower() for val in r.header_all("vary") for v in val.split(",")]
        assert "origin" in vary, r
