"""HTTP/1.0 and HTTP/1.1 behaviour: spec §9 (delimiting, keep-alive, close-delimited
streaming on 1.0, chunked streaming on 1.1, bodiless POST) and §13.13. Checklist rows 13,
14, 15, 16, 69."""

import time

import pytest

from sockjs_client import (HttpConnection, POST, GET, session_url, url, PRELUDE_XHR)

GO_AWAY = b'c[3000,"Go away!"]\n'
GREETING = b"Welcome to SockJS!\n"


def raw(method, path, headers="", body=b"", version="1.0"):
    return ("%s %s HTTP/%s\r\n%s\r\n" % (method, path, version, headers)).encode() + body


# -- HTTP/1.0 -------------------------------------------------------------------------------

def test_http10_streaming_is_close_delimited_without_transfer_encoding():
    """Row 13: prelude, o, close frame, then EOF within 0.1 s."""
    s = session_url("/close")
    with HttpConnection() as c:
        c.send_raw(raw("POST", s + "/xhr_streaming", "Content-Length: 0\r\n"))
        r = c.read_head()
        assert r.status == 200
        assert not r.has("transfer-encoding")
        assert not r.has("content-length")
        assert c.read_exact(len(PRELUDE_XHR)) == PRELUDE_XHR
        assert c.read_exact(2) == b"o\n"
        assert c.read_exact(len(GO_AWAY)) == GO_AWAY
        assert c.wait_eof(0.1), "socket not closed within 0.1 s"


def test_http10_streaming_response_says_connection_close():
    """§9: streaming responses on 1.0 SHOULD carry Connection: close."""
    s = session_url("/close")
    with HttpConnection() as c:
        c.send_raw(raw("POST", s + "/xhr_streaming", "Content-Length: 0\r\n"))
        r = c.read_head()
        assert (r.header("connection") or "").lower() == "close"


def test_http10_streaming_with_keep_alive_request_still_closes():
    s = session_url("/close")
    with HttpConnection() as c:
        c.send_raw(raw("POST", s + "/xhr_streaming",
                       "Content-Length: 0\r\nConnection: Keep-Alive\r\n"))
        r = c.read_head()
        assert not r.has("transfer-encoding") and not r.has("content-length")
        data = c.read_until_eof(timeout=2)
        assert data == PRELUDE_XHR + b"o\n" + GO_AWAY


def test_http10_eventsource_is_close_delimited():
    s = session_url("/close")
    with HttpConnection() as c:
        c.send_raw(raw("GET", s + "/eventsource"))
        r = c.read_head()
        assert r.status == 200
        assert not r.has("transfer-encoding") and not r.has("content-length")
        data = c.read_until_eof(timeout=2)
        assert data == b'\r\ndata: o\r\n\r\ndata: c[3000,"Go away!"]\r\n\r\n'


def test_http10_streaming_ends_with_eof_at_response_limit():
    s = session_url()
    with HttpConnection() as c:
        c.send_raw(raw("GET", s + "/eventsource"))
        c.read_head()
        assert c.read_exact(2 + 11) == b"\r\ndata: o\r\n\r\n"
        assert POST(s + "/xhr_send", '["%s"]' % ("x" * 4096)).status == 204
        event = ('data: a["%s"]\r\n\r\n' % ("x" * 4096)).encode()
        assert c.read_exact(len(event)) == event
        assert c.wait_eof(1.0)


def test_http10_greeting_has_content_length_and_closes():
    """Row 14 (no keep-alive requested: close promptly)."""
    with HttpConnection() as c:
        c.send_raw(raw("GET", url("/echo")))
        r = c.read_head()
        assert r.status == 200
        assert not r.has("transfer-encoding")
        assert r.header("content-length") == "19"
        assert c.read_exact(19) == GREETING
        assert (r.header("connection") or "close").lower() != "keep-alive"
        assert c.wait_eof(0.1), "socket not closed within 0.1 s"


def test_http10_keep_alive_is_honoured_when_answered():
    """Row 14: with Connection: Keep-Alive the server may keep the socket; if it says so,
    a second request works; otherwise it closes."""
    with HttpConnection() as c:
        c.send_raw(raw("GET", url("/echo"), "Connection: Keep-Alive\r\n"))
        r = c.read_head()
        assert not r.has("transfer-encoding")
        assert r.header("content-length") == "19"
        assert c.read_exact(19) == GREETING
        if (r.header("connection") or "").lower() == "keep-alive":
            c.send_raw(raw("GET", url("/echo"), "Connection: Keep-Alive\r\n"))
            r2 = c.read_head()
            assert r2.status == 200
            assert c.read_exact(19) == GREETING
        else:
            assert c.wait_eof(0.1)


FIXED = {
    "xhr": ("POST", lambda: session_url() + "/xhr", 200),
    "jsonp": ("GET", lambda: session_url() + "/jsonp?c=x", 200),
    "info": ("GET", lambda: url("/echo/info"), 200),
    "iframe": ("GET", lambda: url("/echo/iframe.html"), 200),
    "404": ("GET", lambda: url("/echo/nope/"), 404),
    "405": ("GET", lambda: session_url() + "/xhr", 405),
    "500": ("GET", lambda: session_url() + "/jsonp", 500),
}


@pytest.mark.parametrize("kind", list(FIXED))
def test_http10_fixed_responses_use_content_length(kind):
    """§9 HTTP/1.0: fixed responses (greeting, info, iframe, 4xx/500, xhr, jsonp, jsonp_send)
    use Content-Length, never Transfer-Encoding, and close promptly without keep-alive."""
    method, path_fn, status = FIXED[kind]
    with HttpConnection() as c:
        body = "Content-Length: 0\r\n" if method == "POST" else ""
        c.send_raw(raw(method, path_fn(), body))
        r = c.read_head()
        assert r.status == status
        assert not r.has("transfer-encoding")
        assert r.header("content-length") is not None
        c.read_exact(int(r.header("content-length")))
        assert c.wait_eof(0.1)


def test_http10_keep_alive_xhr_poll_is_length_delimited_and_reusable():
    """§9: with Connection: Keep-Alive on 1.0, a kept-open socket needs Content-Length (a
    close-delimited body cannot claim keep-alive)."""
    s = session_url()
    with HttpConnection() as c:
        c.send_raw(raw("POST", s + "/xhr", "Connection: Keep-Alive\r\nContent-Length: 0\r\n"))
        r = c.read_head()
        assert r.status == 200
        assert not r.has("transfer-encoding")
        keep = (r.header("connection") or "").lower() == "keep-alive"
        if keep:
            assert r.header("content-length") == "2", "keep-alive without Content-Length"
            assert c.read_exact(2) == b"o\n"
            c.send_raw(raw("POST", s + "/xhr_send", "Connection: Keep-Alive\r\n"
                           "Content-Length: 5\r\n", b'["k"]'))
            assert c.read_head().status == 204
        else:
            assert r.header("content-length") == "2"
            assert c.read_exact(2) == b"o\n"
            assert c.wait_eof(0.1)


# -- HTTP/1.1 -------------------------------------------------------------------------------

def test_http11_streaming_is_chunked_one_chunk_per_frame():
    """Row 15."""
    s = session_url("/close")
    with HttpConnection() as c:
        c.send_raw(raw("POST", s + "/xhr_streaming", "Host: x\r\nContent-Length: 0\r\n",
                       version="1.1"))
        r = c.read_head()
        assert r.status == 200
        assert r.chunked
        assert not r.has("content-length")
        assert c.read_chunk() == PRELUDE_XHR
        assert c.read_chunk() == b"o\n"
        assert c.read_chunk() == GO_AWAY
        assert r.chunk_size_lines == [b"801", b"2", b"13"]
        assert c.read_chunk() == b""


def test_http11_greeting_and_keep_alive_second_request():
    """Row 16."""
    with HttpConnection() as c:
        r = c.request("GET", url("/echo"))
        assert r.status == 200
        assert r.body == GREETING
        if not r.chunked:
            assert r.header("content-length") == "19"
        assert (r.header("connection") or "keep-alive").lower() == "keep-alive"
        r2 = c.request("GET", url("/echo"))
        assert r2.status == 200 and r2.body == GREETING


def test_http11_keep_alive_across_transport_requests():
    s = session_url()
    with HttpConnection() as c:
        assert c.request("POST", s + "/xhr", body=b"").body == b"o\n"
        assert c.request("POST", s + "/xhr_send", body=b'["k"]').status == 204
        assert c.request("POST", s + "/xhr", body=b"").body == b'a["k"]\n'
        assert c.request("GET", url("/echo/info")).status == 200
        assert c.request("GET", url("/echo/zzz/")).status == 404
        assert c.request("GET", s + "/xhr").status == 405
        assert c.request("GET", s + "/jsonp").status == 500
        assert c.request("GET", url("/echo")).body == GREETING


def test_post_without_content_length_has_empty_body():
    """Row 69 (HttpQuirks.test_emptyContentLengthForPost)."""
    s = session_url()
    with HttpConnection() as c:
        c.send_raw(("POST %s/xhr HTTP/1.1\r\nHost: x\r\n\r\n" % s).encode())
        r = c.read_head()
        assert r.status == 200
        assert c.read_body() == b"o\n"


def test_http10_post_without_content_length_has_empty_body():
    s = session_url()
    with HttpConnection() as c:
        c.send_raw(raw("POST", s + "/xhr"))
        r = c.read_head()
        assert r.status == 200
        assert c.read_body() == b"o\n"


ERRORS = {
    "404": ("GET", lambda: url("/echo/a/a"), 404),
    "405": ("GET", lambda: session_url() + "/xhr", 405),
    "500": ("GET", lambda: session_url() + "/jsonp", 500),
    "xhr_send_404": ("POST", lambda: session_url() + "/xhr_send", 404),
    "400": ("GET", lambda: session_url() + "/websocket", 400),
}


@pytest.mark.parametrize("kind", list(ERRORS))
def test_error_responses_have_content_length(kind):
    """§9: 400/404/405/500 are delimited by Content-Length, even when empty."""
    method, path_fn, status = ERRORS[kind]
    r = POST(path_fn(), b'["x"]') if method == "POST" else GET(path_fn())
    assert r.status == status
    assert not r.chunked
    assert r.header("content-length") == str(len(r.body))


def test_bodiless_204_responses_have_no_content_length():
    """§9 / §13.13: 204 has no Content-Length (xhr_send and preflights)."""
    s = session_url()
    POST(s + "/xhr")
    r = POST(s + "/xhr_send", '["x"]')
    assert r.status == 204
    assert not r.has("content-length")
    from sockjs_client import OPTIONS
    r = OPTIONS(s + "/xhr", headers={"Origin": "test"})
    if r.status == 204:
        assert not r.has("content-length")


def test_status_line_version_is_1x():
    with HttpConnection() as c:
        r = c.request("GET", url("/echo"))
        assert r.version in ("1.0", "1.1")


def test_streaming_frames_are_sent_without_batching_delay():
    """§9 TCP_NODELAY / §13.8: each frame leaves at once."""
    s = session_url()
    with HttpConnection() as c:
        c.send_request("POST", s + "/xhr_streaming", body=b"")
        c.read_head()
        c.read_chunk()
        c.read_chunk()
        latencies = []
        for i in range(10):
            t = time.monotonic()
            POST(s + "/xhr_send", '["%d"]' % i)
            assert c.read_chunk() == ('a["%d"]\n' % i).encode()
            latencies.append(time.monotonic() - t)
        assert max(latencies) < 0.2, latencies
