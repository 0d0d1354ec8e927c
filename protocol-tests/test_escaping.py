"""JSON escaping: spec §4.1 (standard JSON plus the 44 extra \\uXXXX escapes, on every
transport) and §4.2 (decoding client escapes, surrogate pairs, lone surrogates as U+FFFD,
invalid UTF-8), plus §13.1/§13.2. Checklist rows 27, 28."""

import json

import pytest

from sockjs_client import (GET, POST, WebSocket, open_stream, session_url, url)

EXTRA = ([chr(c) for c in range(0x200C, 0x2010)] + [chr(c) for c in range(0x2028, 0x2030)]
         + [chr(c) for c in range(0x2060, 0x2070)] + [chr(c) for c in range(0xFFF0, 0x10000)])
EXPECTED_44 = ('"\\u200c\\u200d\\u200e\\u200f\\u2028\\u2029\\u202a\\u202b\\u202c\\u202d'
               '\\u202e\\u202f\\u2060\\u2061\\u2062\\u2063\\u2064\\u2065\\u2066\\u2067\\u2068'
               '\\u2069\\u206a\\u206b\\u206c\\u206d\\u206e\\u206f\\ufff0\\ufff1\\ufff2\\ufff3'
               '\\ufff4\\ufff5\\ufff6\\ufff7\\ufff8\\ufff9\\ufffa\\ufffb\\ufffc\\ufffd\\ufffe'
               '\\uffff"')


def raw_json(messages):
    """Client payload with every non-ASCII character sent raw (UTF-8)."""
    return json.dumps(messages, ensure_ascii=False).encode("utf-8")


def J(frame):
    """J(F) for an all-ASCII frame: the JSON string literal (no '<' in our frames)."""
    assert all(ord(ch) < 128 for ch in frame)
    return '"' + frame.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_expected_string_has_44_characters():
    assert len(EXTRA) == 44
    assert json.loads(EXPECTED_44) == "".join(EXTRA)


def test_xhr_server_encodes_the_44_characters_as_lowercase_u_escapes():
    """Row 28."""
    s = session_url()
    assert POST(s + "/xhr").body == b"o\n"
    assert POST(s + "/xhr_send", raw_json(["".join(EXTRA)])).status == 204
    r = POST(s + "/xhr")
    assert r.body == ("a[%s]\n" % EXPECTED_44).encode()


def _send_44(s):
    assert POST(s + "/xhr_send", raw_json(["".join(EXTRA)])).status == 204


def test_xhr_streaming_encodes_the_44_characters():
    s = session_url()
    with open_stream("POST", s + "/xhr_streaming", body=b"") as c:
        c.read_chunk()
        assert c.read_chunk() == b"o\n"
        _send_44(s)
        assert c.read_chunk() == ("a[%s]\n" % EXPECTED_44).encode()


def test_eventsource_encodes_the_44_characters():
    s = session_url()
    with open_stream("GET", s + "/eventsource") as c:
        c.read_chunk()
        c.read_chunk()
        _send_44(s)
        assert c.read_chunk() == ("data: a[%s]\r\n\r\n" % EXPECTED_44).encode()


def test_htmlfile_encodes_the_44_characters_inside_the_double_encoding():
    s = session_url()
    with open_stream("GET", s + "/htmlfile?c=x") as c:
        c.read_chunk()
        c.read_chunk()
        _send_44(s)
        frame = "a[%s]" % EXPECTED_44
        assert c.read_chunk() == ("<script>\np(%s);\n</script>\r\n" % J(frame)).encode()


def test_jsonp_encodes_the_44_characters_inside_the_double_encoding():
    s = session_url()
    assert GET(s + "/jsonp?c=x").body == b'/**/x("o");\r\n'
    _send_44(s)
    r = GET(s + "/jsonp?c=x")
    assert r.body == ('/**/x(%s);\r\n' % J("a[%s]" % EXPECTED_44)).encode()


def test_websocket_encodes_the_44_characters():
    with WebSocket(session_url() + "/websocket") as ws:
        assert ws.recv_text() == "o"
        ws.send_text(json.dumps(["".join(EXTRA)], ensure_ascii=False))
        assert ws.recv_text() == "a[%s]" % EXPECTED_44


def test_close_reason_and_messages_use_standard_json_escapes():
    s = session_url()
    POST(s + "/xhr")
    msg = 'q"b\\s/t é 中 \x7f'
    assert POST(s + "/xhr_send", raw_json([msg])).status == 204
    body = POST(s + "/xhr").body
    # '"' and '\' escaped, '/' not escaped, other non-ASCII raw UTF-8.
    assert body == ('a["q\\"b\\\\s/t é 中 \x7f"]\n').encode("utf-8")


def test_control_characters_are_escaped_never_raw():
    s = session_url()
    POST(s + "/xhr")
    msg = "".join(chr(c) for c in range(0x20))
    assert POST(s + "/xhr_send", json.dumps([msg])).status == 204
    body = POST(s + "/xhr").body
    assert body.endswith(b"\n")
    frame = body[:-1]
    assert not any(b < 0x20 for b in frame), frame
    assert json.loads(frame[1:]) == [msg]
    # Lowercase hex where \\u00xx is used.
    import re
    for esc in re.findall(rb"\\u[0-9a-fA-F]{4}", frame):
        assert esc == esc.lower()


def client_escaped_set():
    """Characters sockjs-client sends escaped (§4.2): controls, '"', '\\', U+007F-U+009F,
    U+00AD, U+0600-U+0604, U+2000-U+20FF, U+FEFF, U+FFF0-U+FFFF, combining characters."""
    chars = [chr(c) for c in range(0x00, 0x20)] + ['"', "\\"]
    chars += [chr(c) for c in range(0x7F, 0xA0)] + ["\u00ad"]
    chars += [chr(c) for c in range(0x0600, 0x0605)]
    chars += [chr(c) for c in range(0x2000, 0x2100)] + ["\ufeff"]
    chars += [chr(c) for c in range(0xFFF0, 0x10000)]
    chars += [chr(c) for c in range(0x0300, 0x0334)] + [chr(c) for c in range(0x0591, 0x05B0)]
    chars += [chr(c) for c in range(0x1DC0, 0x1DD0)] + [chr(c) for c in range(0xF900, 0xFA0E)]
    return "".join(chars)


def test_xhr_server_decodes_client_u_escapes():
    """Row 27: every character sent as \\uXXXX comes back as the same decoded string."""
    text = client_escaped_set()
    escaped = "".join("\\u%04x" % ord(ch) for ch in text)
    s = session_url()
    assert POST(s + "/xhr").body == b"o\n"
    assert POST(s + "/xhr_send", '["%s"]' % escaped).status == 204
    body = POST(s + "/xhr").body
    assert body.startswith(b"a") and body.endswith(b"\n")
    assert json.loads(body[1:-1].decode("utf-8")) == [text]


def test_server_decodes_uppercase_u_escapes():
    s = session_url()
    POST(s + "/xhr")
    assert POST(s + "/xhr_send", '["\\u00E9\\u200C\\uFFFF"]').status == 204
    assert POST(s + "/xhr").body == 'a["é\\u200c\\uffff"]\n'.encode("utf-8")


def test_surrogate_pair_escapes_combine_into_one_character():
    """§4.2: \\ud83d\\ude00 is one emoji, echoed as raw UTF-8."""
    s = session_url()
    POST(s + "/xhr")
    assert POST(s + "/xhr_send", '["\\ud83d\\ude00"]').status == 204
    assert POST(s + "/xhr").body == 'a["\U0001F600"]\n'.encode("utf-8")


@pytest.mark.parametrize("sent,expected", [
    ('["\\ud800"]', 'a["\\ufffd"]'),
    ('["\\udc00x"]', 'a["\\ufffdx"]'),
    ('["a\\ud800\\ud800b"]', 'a["a\\ufffd\\ufffdb"]'),
    ('["\\ude00\\ud83d"]', 'a["\\ufffd\\ufffd"]'),
    ('["\\ud83d\\ude00\\ud83d"]', 'a["\U0001F600\\ufffd"]'),
])
def test_lone_surrogates_decode_as_replacement_character(sent, expected):
    """§4.2 (ours): each lone surrogate escape becomes U+FFFD (escaped as \\ufffd on the way
    out); the request does not fail."""
    s = session_url()
    POST(s + "/xhr")
    assert POST(s + "/xhr_send", sent).status == 204
    assert POST(s + "/xhr").body == (expected + "\n").encode("utf-8")


def test_lone_surrogate_on_jsonp_send_is_replacement_character():
    s = session_url()
    GET(s + "/jsonp?c=x")
    r = POST(s + "/jsonp_send", "d=%5B%22%5Cud800%22%5D",
             {"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 200 and r.body == b"ok"
    assert GET(s + "/jsonp?c=x").body == b'/**/x("a[\\"\\\\ufffd\\"]");\r\n'


def test_lone_surrogate_on_websocket_does_not_close_it():
    with WebSocket(session_url() + "/websocket") as ws:
        assert ws.recv_text() == "o"
        ws.send_text('["\\ud800"]')
        assert ws.recv_text() == 'a["\\ufffd"]'
        ws.send_text('"\\udfff"')
        assert ws.recv_text() == 'a["\\ufffd"]'
        ws.send_text('["ok"]')
        assert ws.recv_text() == 'a["ok"]'


def test_invalid_utf8_body_is_broken_json_encoding():
    """§4.2: invalid UTF-8 on xhr_send or jsonp_send → 500 Broken JSON encoding."""
    s = session_url()
    POST(s + "/xhr")
    r = POST(s + "/xhr_send", b'["\xc3\x28"]')
    assert r.status == 500 and b"Broken JSON encoding." in r.body
    r = POST(s + "/jsonp_send", b'["\xed\xa0\x80"]', {"Content-Type": "text/plain"})
    assert r.status == 500 and b"Broken JSON encoding." in r.body


def test_raw_websocket_is_not_json_escaped():
    with WebSocket(url("/echo/websocket")) as ws:
        ws.send_text("".join(EXTRA))
        assert ws.recv_text() == "".join(EXTRA)
