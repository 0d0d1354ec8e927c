"""EventSource: spec §5.4 (content type, prelude, data framing, the %/CR/LF/NUL escaping of
§13.11) and its response limit (§5.11). Checklist rows 3, 4 (row 30 is in
test_jsessionid.py)."""

import json

import pytest

from sockjs_client import (POST, open_stream, session_url, assert_no_cache,
                           assert_cors, assert_no_cookie)


def open_eventsource(s, headers=None):
    c = open_stream("GET", s + "/eventsource", headers)
    assert c.response.status == 200
    return c


def decode_event(chunk):
    """Split one event chunk into its frame text, checking the framing."""
    assert chunk.startswith(b"data: "), chunk
    assert chunk.endswith(b"\r\n\r\n"), chunk
    payload = chunk[len(b"data: "):-4]
    for raw in (b"\r", b"\n", b"\0"):
        assert raw not in payload, "raw %r inside event data %r" % (raw, chunk)
    return payload.decode("utf-8")


def test_eventsource_transport_framing_and_headers():
    """Row 4."""
    s = session_url()
    with open_eventsource(s, {"Origin": "test"}) as c:
        r = c.response
        assert r.header("content-type") == "text/event-stream"
        assert_no_cache(r)
        assert_cors(r, "test")
        assert_no_cookie(r)
        assert r.chunked and not r.has("content-length")
        assert c.read_chunk() == b"\r\n"
        assert c.read_chunk() == b"data: o\r\n\r\n"
        assert POST(s + "/xhr_send", '["x"]').status == 204
        assert c.read_chunk() == b'data: a["x"]\r\n\r\n'
        # Two spaces, NUL, LF, CR, space: re-encoded as JSON escapes, never raw.
        assert POST(s + "/xhr_send", '["  \\u0000\\n\\r "]').status == 204
        chunk = c.read_chunk()
        frame = decode_event(chunk)
        assert frame.startswith("a")
        assert json.loads(frame[1:]) == ["  \x00\n\r "]


def test_eventsource_control_character_echo_matches_spec_example():
    """§5.4 example: data: a["  \\u0000\\n\\r "] (short escapes for LF/CR, \\u0000 for NUL;
    \\u000a and \\u000d are equally valid, so both are accepted)."""
    s = session_url()
    with open_eventsource(s) as c:
        c.read_chunk()
        c.read_chunk()
        POST(s + "/xhr_send", '["  \\u0000\\n\\r "]')
        chunk = c.read_chunk()
        assert chunk in (b'data: a["  \\u0000\\n\\r "]\r\n\r\n',
                         b'data: a["  \\u0000\\u000a\\u000d "]\r\n\r\n'), chunk


def test_eventsource_content_type_has_no_charset():
    with open_eventsource(session_url()) as c:
        assert c.response.header("content-type") == "text/event-stream"


def test_eventsource_carries_x_accel_buffering_no():
    """§5.0 (ours, SHOULD)."""
    with open_eventsource(session_url()) as c:
        assert c.response.header("x-accel-buffering") == "no"


def test_eventsource_without_origin_answers_star():
    with open_eventsource(session_url()) as c:
        assert_cors(c.response, None)


@pytest.mark.parametrize("message,expected", [
    ("100%", b'data: a["100%25"]\r\n\r\n'),
    ("a%20b", b'data: a["a%2520b"]\r\n\r\n'),
    ("%%", b'data: a["%25%25"]\r\n\r\n'),
    ("%0D%0A%00", b'data: a["%250D%250A%2500"]\r\n\r\n'),
])
def test_eventsource_escapes_percent_as_percent_25(message, expected):
    """§5.4 / §13.11: sockjs-client runs decodeURI on the data."""
    s = session_url()
    with open_eventsource(s) as c:
        c.read_chunk()
        c.read_chunk()
        assert POST(s + "/xhr_send", json.dumps([message])).status == 204
        assert c.read_chunk() == expected


def test_eventsource_never_sends_raw_cr_lf_nul_in_data():
    """§5.4: CR, LF and NUL never appear raw in an event (JSON escapes them, and esc would
    turn any left into %0D, %0A, %00)."""
    s = session_url()
    with open_eventsource(s) as c:
        c.read_chunk()
        c.read_chunk()
        msg = "a\rb\nc\x00d\r\n%"
        assert POST(s + "/xhr_send", json.dumps([msg])).status == 204
        frame = decode_event(c.read_chunk())
        # Undo esc, as sockjs-client's decodeURI would, then parse.
        unescaped = frame.replace("%0D", "\r").replace("%0A", "\n").replace("%00", "\0") \
                         .replace("%25", "%")
        assert json.loads(unescaped[1:]) == [msg]


def test_eventsource_closes_after_response_limit():
    """Row 3: data: o (11 bytes) + one 4096-x message event (4111 bytes) >= 4096."""
    s = session_url()
    with open_eventsource(s) as c:
        assert c.read_chunk() == b"\r\n"
        assert c.read_chunk() == b"data: o\r\n\r\n"
        assert POST(s + "/xhr_send", json.dumps(["x" * 4096])).status == 204
        chunk = c.read_chunk()
        assert chunk == ('data: a["%s"]\r\n\r\n' % ("x" * 4096)).encode()
        assert len(chunk) == 4111
        assert c.read_chunk() == b"", "response did not end at the response limit"


def test_eventsource_small_messages_do_not_end_response_before_limit():
    s = session_url()
    with open_eventsource(s) as c:
        c.read_chunk()
        c.read_chunk()
        for i in range(10):
            POST(s + "/xhr_send", json.dumps(["m%d" % i]))
            assert c.read_chunk() == ('data: a["m%d"]\r\n\r\n' % i).encode()
        assert not c.data_pending(0.2)
