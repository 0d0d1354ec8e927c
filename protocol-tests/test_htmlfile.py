"""htmlfile: spec §5.5 (head prelude, script frames, `<` escaped as \\u003c per §13.12), the
callback rules of §5.10 and its response limit (§5.11). Checklist rows 9, 10, 11, 12 (row 31
is in test_jsessionid.py)."""

import json

import pytest

from sockjs_client import (GET, POST, open_stream, session_url, assert_content_type,
                           assert_no_cache, assert_no_cors, assert_no_cookie)

HEAD = """<!doctype html>
<html><head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
</head><body><h2>Don't panic!</h2>
  <script>
    document.domain = document.domain;
    var c = parent.{{ callback }};
    c.start();
    function p(d) {c.message(d);};
    window.onload = function() {c.stop();};
  </script>
"""


def script(frame):
    """The htmlfile chunk for a frame: J(F) with '<' escaped as \\u003c."""
    j = json.dumps(frame, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    return ("<script>\np(%s);\n</script>\r\n" % j).encode("utf-8")


def open_htmlfile(s, query="?c=callback", headers=None):
    c = open_stream("GET", s + "/htmlfile" + query, headers)
    assert c.response.status == 200
    return c


def verify_head(chunk, callback="callback"):
    head = HEAD.replace("{{ callback }}", callback).encode()
    assert chunk.strip() == head.strip()
    assert len(chunk) > 1024
    body = chunk[1:] if chunk.startswith(b"\n") else chunk
    assert body.startswith(head), "head is not byte-exact"
    rest = body[len(head):]
    assert rest.endswith(b"\r\n\r\n")
    assert rest[:-4] == b" " * (len(rest) - 4), "padding must be spaces only"


def test_htmlfile_transport_head_o_and_message_scripts():
    """Row 12: ?c=%63allback is URL-decoded to 'callback'."""
    s = session_url()
    with open_htmlfile(s, "?c=%63allback", {"Origin": "test"}) as c:
        r = c.response
        assert_content_type(r, "text/html; charset=UTF-8")
        assert_no_cache(r)
        assert_no_cors(r)
        assert_no_cookie(r)
        assert r.chunked and not r.has("content-length")
        verify_head(c.read_chunk())
        assert c.read_chunk() == b'<script>\np("o");\n</script>\r\n'
        assert r.chunk_size_lines[-1].lower() == b"1c"
        assert POST(s + "/xhr_send", '["x"]').status == 204
        assert c.read_chunk() == b'<script>\np("a[\\"x\\"]");\n</script>\r\n'


def test_htmlfile_carries_x_accel_buffering_no():
    """§5.0 (ours, SHOULD)."""
    with open_htmlfile(session_url()) as c:
        assert c.response.header("x-accel-buffering") == "no"


def test_htmlfile_escapes_less_than_as_u003c():
    """§5.5 / §13.12: a message with </script> or <!-- cannot end the script element."""
    s = session_url()
    with open_htmlfile(s) as c:
        c.read_chunk()
        c.read_chunk()
        msg = "</script><!--<b>"
        assert POST(s + "/xhr_send", json.dumps([msg])).status == 204
        chunk = c.read_chunk()
        assert chunk == b'<script>\np("a[\\"\\u003c/script>\\u003c!--\\u003cb>\\"]");\n' \
                        b'</script>\r\n'
        inner = chunk[len(b"<script>\np("):-len(b");\n</script>\r\n")]
        assert b"<" not in inner
        frame = json.loads(inner)
        assert json.loads(frame[1:]) == [msg]


def test_htmlfile_accepts_callback_parameter_name():
    s = session_url()
    with open_htmlfile(s, "?callback=cb_1.x-y") as c:
        verify_head(c.read_chunk(), "cb_1.x-y")
        assert c.read_chunk() == b'<script>\np("o");\n</script>\r\n'


@pytest.mark.parametrize("cb", ["%20", "*", "abc(", "abc%28", "", "a" * 33, "a+b", "a%2Fb",
                                "%3Cscript%3E"])
def test_htmlfile_invalid_callback_is_500(cb):
    """Row 9 (plus empty, 33 characters, and other characters outside [a-zA-Z0-9_.-])."""
    r = GET(session_url() + "/htmlfile?c=" + cb)
    assert r.status == 500
    assert b'invalid "callback" parameter' in r.body
    assert_content_type(r, "text/plain; charset=UTF-8")
    assert_no_cache(r)
    assert r.header("content-length") == str(len(r.body))


def test_htmlfile_callback_of_32_characters_is_valid():
    cb = "_jp.a1b2c3d" + "x" * 21
    assert len(cb) == 32
    with open_htmlfile(session_url(), "?c=" + cb) as c:
        verify_head(c.read_chunk(), cb)


def test_htmlfile_missing_callback_is_500():
    """Row 10."""
    r = GET(session_url() + "/htmlfile")
    assert r.status == 500
    assert b'"callback" parameter required' in r.body
    assert_content_type(r, "text/plain; charset=UTF-8")
    assert_no_cache(r)


def test_htmlfile_bad_callback_creates_no_session():
    """§5.5: the callback is validated first."""
    s = session_url()
    assert GET(s + "/htmlfile?c=abc(").status == 500
    assert POST(s + "/xhr_send", '["x"]').status == 404


def test_htmlfile_closes_after_response_limit():
    """Row 11: the o script (28 bytes) + one 4096-x message script (4130 bytes) >= 4096."""
    s = session_url()
    with open_htmlfile(s) as c:
        verify_head(c.read_chunk())
        assert c.read_chunk() == b'<script>\np("o");\n</script>\r\n'
        assert POST(s + "/xhr_send", json.dumps(["x" * 4096])).status == 204
        chunk = c.read_chunk()
        assert chunk == script('a["%s"]' % ("x" * 4096))
        assert len(chunk) == 4130
        assert c.read_chunk() == b""
