"""xhr streaming: spec §5.3 (prelude, one chunk per frame), §5.0 common rules, and the
response limit arithmetic of §5.11 / §13.4. Checklist rows 67, 68 (row 66, the preflight,
is in test_cors.py; rows 7, 8 and 6 are in test_sessions.py; rows 13 and 15 in
test_http.py)."""

import json
import time

from sockjs_client import (POST, open_stream, session_url, PRELUDE_XHR, assert_content_type,
                           assert_no_cache, assert_cors, assert_no_cookie)


def open_xhr_streaming(s, headers=None):
    c = open_stream("POST", s + "/xhr_streaming", headers, body=b"")
    assert c.response.status == 200
    return c


def test_xhr_streaming_sends_prelude_then_o_then_frames_each_in_its_own_chunk():
    """Row 68."""
    s = session_url()
    with open_xhr_streaming(s, {"Origin": "test"}) as c:
        r = c.response
        assert_content_type(r, "application/javascript; charset=UTF-8")
        assert_cors(r, "test")
        assert_no_cache(r)
        assert_no_cookie(r)
        assert r.chunked
        assert not r.has("content-length")
        assert c.read_chunk() == PRELUDE_XHR
        assert r.chunk_size_lines[-1].lower() == b"801"
        assert c.read_chunk() == b"o\n"
        assert r.chunk_size_lines[-1] == b"2"
        assert POST(s + "/xhr_send", '["x"]').status == 204
        assert c.read_chunk() == b'a["x"]\n'
        assert POST(s + "/xhr_send", '["y","z"]').status == 204
        assert c.read_chunk() == b'a["y","z"]\n'


def test_xhr_streaming_carries_x_accel_buffering_no():
    """§5.0 (ours, SHOULD): streaming responses carry X-Accel-Buffering: no."""
    with open_xhr_streaming(session_url()) as c:
        assert c.response.header("x-accel-buffering") == "no"


def test_xhr_streaming_closes_after_response_limit():
    """Row 67 and §5.11: o\\n (2) + 31 x 134 bytes = 4156 >= 4096 ends the response after
    message 31, not after message 30 (4022); the 2049-byte prelude is not counted."""
    s = session_url()
    msg = "x" * 128
    with open_xhr_streaming(s) as c:
        assert c.read_chunk() == PRELUDE_XHR
        assert c.read_chunk() == b"o\n"
        for i in range(31):
            assert POST(s + "/xhr_send", json.dumps([msg])).status == 204
            chunk = c.read_chunk()
            assert chunk == ('a["%s"]\n' % msg).encode(), "message %d" % (i + 1)
            assert len(chunk) == 134
            if i == 29:
                # 2 + 30 * 134 = 4022 < 4096: the response must still be open.
                assert not c.data_pending(0.3), "response ended after message 30"
        assert c.read_chunk() == b"", "response did not end after message 31"


def test_xhr_streaming_response_limit_keeps_session():
    """§5.11: after the limit the receiver detaches normally; the session stays, queues, and
    the next stream gets the queued messages without a new o."""
    s = session_url()
    big = "x" * 4200
    with open_xhr_streaming(s) as c:
        assert c.read_chunk() == PRELUDE_XHR
        assert c.read_chunk() == b"o\n"
        assert POST(s + "/xhr_send", json.dumps([big])).status == 204
        assert c.read_chunk() == ('a["%s"]\n' % big).encode()
        assert c.read_chunk() == b""
    assert POST(s + "/xhr_send", '["later"]').status == 204
    with open_xhr_streaming(s) as c:
        assert c.read_chunk() == PRELUDE_XHR
        assert c.read_chunk() == b'a["later"]\n'


def test_xhr_streaming_on_existing_session_sends_no_second_o():
    s = session_url()
    assert POST(s + "/xhr").body == b"o\n"
    with open_xhr_streaming(s) as c:
        assert c.read_chunk() == PRELUDE_XHR
        assert not c.data_pending(0.3), "unexpected frame on an existing session"
        assert POST(s + "/xhr_send", '["m"]').status == 204
        assert c.read_chunk() == b'a["m"]\n'


def test_xhr_streaming_frames_arrive_without_delay():
    s = session_url()
    with open_xhr_streaming(s) as c:
        c.read_chunk()
        c.read_chunk()
        for i in range(5):
            start = time.monotonic()
            assert POST(s + "/xhr_send", json.dumps([str(i)])).status == 204
            assert c.read_chunk() == ('a["%d"]\n' % i).encode()
            assert time.monotonic() - start < 0.5
