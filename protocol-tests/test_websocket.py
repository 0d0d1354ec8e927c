"""WebSocket: the SockJS WebSocket of §5.8, the raw WebSocket of §5.9, and the handshakes of
§10 (validity check, RFC 6455 accept key, hixie-76 with the §10.3 test vector). Checklist
rows 44, 45, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58."""

import json
import time

import pytest

from sockjs_client import (GET, POST, request, WebSocket, WebSocketClosed, Hixie76,
                           HttpConnection, session_url, url, host_header, ws_accept,
                           assert_content_type, assert_no_cookie, OP_TEXT, OP_CONT)


def ws_path(service="/echo", session=None):
    return session_url(service, session=session) + "/websocket"


def expect_close(ws, timeout=2.0):
    """Read until the close frame; fail on any text message before it."""
    try:
        msg = ws.recv(timeout)
    except WebSocketClosed:
        raise AssertionError("TCP closed without a WebSocket close frame")
    assert msg[0] == "close", "expected a close frame, got %r" % (msg,)
    return msg


# -- SockJS WebSocket (§5.8) ----------------------------------------------------------------

def test_websocket_sends_o_then_echoes_array():
    """Row 55."""
    with WebSocket(ws_path()) as ws:
        assert ws.recv_text() == "o"
        ws.send_text('["a"]')
        assert ws.recv_text() == 'a["a"]'


def test_websocket_o_is_sent_promptly():
    start = time.monotonic()
    with WebSocket(ws_path()) as ws:
        assert ws.recv_text(timeout=0.5) == "o"
        assert time.monotonic() - start < 0.5


def test_websocket_ignores_empty_message_and_empty_array():
    """Row 51."""
    with WebSocket(ws_path()) as ws:
        assert ws.recv_text() == "o"
        ws.send_text("")
        ws.send_text("[]")
        ws.send_text('["a"]')
        assert ws.recv_text() == 'a["a"]'


def test_websocket_single_json_string_is_one_message():
    with WebSocket(ws_path()) as ws:
        assert ws.recv_text() == "o"
        ws.send_text('"abc"')
        assert ws.recv_text() == 'a["abc"]'


def test_websocket_array_delivers_each_element_in_order():
    """Frames may batch messages; the order and content must be exact."""
    with WebSocket(ws_path()) as ws:
        assert ws.recv_text() == "o"
        ws.send_text('["a","b","c"]')
        got = []
        for _ in range(3):
            f = ws.recv_text()
            assert f.startswith("a"), f
            got += json.loads(f[1:])
            if len(got) >= 3:
                break
        assert got == ["a", "b", "c"]


def test_websocket_frames_have_no_trailing_newline():
    with WebSocket(ws_path()) as ws:
        assert ws.recv_text() == "o"
        ws.send_text('["x"]')
        f = ws.recv_text()
        assert not f.endswith("\n")


def test_websocket_broken_json_closes_without_text_frame():
    """Row 49 and §5.8: close 3000 "Broken framing.", no c frame or text before it."""
    with WebSocket(ws_path()) as ws:
        assert ws.recv_text() == "o"
        ws.send_text('["a')
        msg = expect_close(ws)
        assert msg[1:] == (3000, "Broken framing.")
        assert ws.wait_eof(2.0)


def test_websocket_binary_message_is_treated_like_broken_json():
    with WebSocket(ws_path()) as ws:
        assert ws.recv_text() == "o"
        ws.send_binary(b'["a"]')
        msg = expect_close(ws)
        assert msg[1:] == (3000, "Broken framing.")


def test_websocket_close_service_sends_c_frame_then_close_1000():
    """Row 50 and §5.8 application close."""
    with WebSocket(ws_path("/close")) as ws:
        assert ws.recv_text() == "o"
        assert ws.recv_text() == 'c[3000,"Go away!"]'
        msg = expect_close(ws)
        assert msg[1:] == (1000, "Normal closure")
        ws.send_close(1000)
        assert ws.wait_eof(2.0)


def test_websocket_server_closes_tcp_within_a_second_even_without_close_reply():
    with WebSocket(ws_path("/close")) as ws:
        assert ws.recv_text() == "o"
        assert ws.recv_text() == 'c[3000,"Go away!"]'
        expect_close(ws)
        assert ws.wait_eof(2.0), "TCP not closed within ~1 s of the close frame"


def test_websocket_answers_client_close_echoing_its_code():
    with WebSocket(ws_path()) as ws:
        assert ws.recv_text() == "o"
        ws.send_close(1000, "bye")
        msg = expect_close(ws)
        assert msg[1] == 1000
        assert ws.wait_eof(2.0)


def test_websocket_answers_ping_with_pong():
    with WebSocket(ws_path()) as ws:
        assert ws.recv_text() == "o"
        ws.send_ping(b"hi!")
        msg = ws.recv()
        assert msg == ("pong", b"hi!")


def test_websocket_reassembles_fragmented_message():
    with WebSocket(ws_path()) as ws:
        assert ws.recv_text() == "o"
        ws.send_frame(OP_TEXT, '["ab', fin=False)
        ws.send_frame(OP_CONT, 'c","d', fin=False)
        ws.send_frame(OP_CONT, '"]', fin=True)
        got = []
        for _ in range(2):
            f = ws.recv_text()
            got += json.loads(f[1:])
            if len(got) == 2:
                break
        assert got == ["abc", "d"]


def test_websocket_invalid_utf8_text_closes_1007():
    with WebSocket(ws_path()) as ws:
        assert ws.recv_text() == "o"
        ws.send_frame(OP_TEXT, b'["\xff\xfe"]')
        msg = expect_close(ws)
        assert msg[1] == 1007


def test_websocket_message_over_max_inbound_bytes_closes_1009():
    with WebSocket(ws_path()) as ws:
        assert ws.recv_text() == "o"
        payload = b'["' + b"x" * (1024 * 1024) + b'"]'
        try:
            ws.send_frame(OP_TEXT, payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        msg = expect_close(ws, timeout=5)
        assert msg[1] == 1009


def test_websocket_two_sockets_on_same_url_are_independent_and_url_reusable():
    """Row 54 and §13.7."""
    path = ws_path()
    ws1 = WebSocket(path)
    ws2 = WebSocket(path)
    try:
        assert ws1.recv_text() == "o"
        assert ws2.recv_text() == "o"
        ws1.send_text('["a"]')
        assert ws1.recv_text() == 'a["a"]'
        ws2.send_text('["b"]')
        assert ws2.recv_text() == 'a["b"]'
    finally:
        ws1.close()
        ws2.close()
    with WebSocket(path) as ws3:
        assert ws3.recv_text() == "o"
        ws3.send_text('["c"]')
        assert ws3.recv_text() == 'a["c"]'


def test_websocket_session_is_not_registered_for_http_transports():
    """§5.8: the session is not put in the session map under I."""
    s = session_url()
    with WebSocket(s + "/websocket") as ws:
        assert ws.recv_text() == "o"
        assert POST(s + "/xhr_send", '["x"]').status == 404
        r = POST(s + "/xhr")
        assert r.body == b"o\n"  # a separate HTTP session, not a 2010


# -- handshake (§10.1, §10.2) ---------------------------------------------------------------

def test_hybi13_handshake_headers_without_origin():
    """Row 53: Sec-WebSocket-Origin instead of Origin; 101 with the right accept key."""
    ws = WebSocket(ws_path(), headers={"Sec-WebSocket-Origin": "http://asd"})
    with ws:
        r = ws.response
        assert r.status == 101
        assert r.header("upgrade", "").lower() == "websocket"
        assert "upgrade" in [t.strip().lower() for t in r.header("connection", "").split(",")]
        assert r.header("sec-websocket-accept") == ws_accept(ws.key)
        assert not r.has("content-length")
        assert_no_cookie(r)
        assert not r.has("sec-websocket-protocol")
        assert ws.recv_text() == "o"


def test_hybi13_accept_key_test_vector():
    """§10.2: x3JJHMbDL1EzLkh9GBhXDw== gives HSmrc0sMlYUkAGmm5OPpG2HaGWk=."""
    assert ws_accept("x3JJHMbDL1EzLkh9GBhXDw==") == "HSmrc0sMlYUkAGmm5OPpG2HaGWk="
    with WebSocket(ws_path(), key="x3JJHMbDL1EzLkh9GBhXDw==") as ws:
        assert ws.response.header("sec-websocket-accept") == "HSmrc0sMlYUkAGmm5OPpG2HaGWk="


def test_websocket_101_sets_no_cookie_when_cookie_needed():
    with WebSocket(ws_path("/cookie_needed_echo"),
                   headers={"Cookie": "JSESSIONID=abc"}) as ws:
        assert ws.response.status == 101
        assert_no_cookie(ws.response)
        assert ws.recv_text() == "o"


def test_websocket_version_8_is_accepted():
    with WebSocket(ws_path(), version="8") as ws:
        assert ws.response.status == 101
        assert ws.recv_text() == "o"


@pytest.mark.parametrize("path", ["/echo/000/{id}/websocket", "/echo/websocket"])
def test_websocket_unsupported_version_is_400_with_version_header(path):
    from sockjs_client import new_id
    ws = WebSocket(url(path.replace("{id}", new_id())), version="7", expect_upgrade=False)
    with ws:
        assert ws.response.status == 400
        assert ws.response.header("sec-websocket-version") == "13"
        body = ws.conn.read_body()
        if path == "/echo/websocket":
            assert b"Only supported WebSocket protocol is RFC 6455." in body


@pytest.mark.parametrize("upgrade,connection", [
    ("WebSocket", "Upgrade"), ("websocket", "keep-alive, Upgrade"), ("WEBSOCKET", "upgrade"),
])
def test_websocket_upgrade_and_connection_tokens_are_case_insensitive(upgrade, connection):
    with HttpConnection() as c:
        c.send_request("GET", ws_path(), [("Upgrade", upgrade), ("Connection", connection),
                                          ("Sec-WebSocket-Key", "x3JJHMbDL1EzLkh9GBhXDw=="),
                                          ("Sec-WebSocket-Version", "13")])
        assert c.read_head().status == 101


def test_websocket_get_without_upgrade_is_400():
    """Row 56."""
    r = GET(ws_path())
    assert r.status == 400
    assert_content_type(r, "text/plain; charset=UTF-8")
    assert r.body == b"Not a valid websocket request"


def test_websocket_connection_close_is_400():
    """Row 57."""
    r = GET(ws_path(), headers={"Upgrade": "WebSocket", "Connection": "close"})
    assert r.status == 400
    assert b"Not a valid websocket request" in r.body


def test_raw_websocket_get_without_upgrade_is_400():
    r = GET(url("/echo/websocket"))
    assert r.status == 400
    assert b"Not a valid websocket request" in r.body


@pytest.mark.parametrize("with_upgrade", [False, True])
def test_websocket_post_is_405(with_upgrade):
    """Row 58."""
    headers = {"Upgrade": "WebSocket", "Connection": "Upgrade"} if with_upgrade else {}
    r = request("POST", ws_path(), headers, body=b"")
    assert r.status == 405
    assert r.header("allow") == "GET"
    assert not r.has("content-type")
    assert r.body == b""


# -- raw WebSocket (§5.9) -------------------------------------------------------------------

def test_raw_websocket_echoes_unframed():
    """Row 45."""
    with WebSocket(url("/echo/websocket")) as ws:
        ws.send_text("Hello world!\uffff")
        assert ws.recv_text() == "Hello world!\uffff"
        ws.send_text('["not", "parsed"]')
        assert ws.recv_text() == '["not", "parsed"]'


def test_raw_websocket_sends_no_o_frame():
    with WebSocket(url("/echo/websocket")) as ws:
        assert not ws.conn.data_pending(0.3)


def test_raw_websocket_close_service_sends_close_go_away_first():
    """Row 44: the first thing received is a close frame 3000 "Go away!"."""
    with WebSocket(url("/close/websocket")) as ws:
        msg = ws.recv(timeout=2)
        assert msg == ("close", 3000, "Go away!")


def test_raw_websocket_without_supported_subprotocol_omits_header():
    """§5.9: the echo service declares no subprotocol; the handshake still succeeds."""
    with WebSocket(url("/echo/websocket"), protocols=["v12.stomp", "foo"]) as ws:
        assert ws.response.status == 101
        assert not ws.response.has("sec-websocket-protocol")
        ws.send_text("x")
        assert ws.recv_text() == "x"


def test_raw_websocket_answers_client_close_echoing_its_code():
    with WebSocket(url("/echo/websocket")) as ws:
        ws.send_close(1000)
        msg = expect_close(ws)
        assert msg[1] == 1000
        assert ws.wait_eof(2.0)


def test_raw_websocket_answers_ping():
    with WebSocket(url("/echo/websocket")) as ws:
        ws.send_ping(b"p")
        assert ws.recv() == ("pong", b"p")


def test_raw_websocket_does_not_offer_hixie76():
    with Hixie76(url("/echo/websocket")) as h:
        assert h.response.status == 400


# -- hixie-76 (§10.3) -----------------------------------------------------------------------

def test_hixie76_headers_before_key3_and_challenge_test_vector():
    """Row 52 and §10.3."""
    path = ws_path()
    origin = "http://%s" % host_header()
    with Hixie76(path, origin=origin) as h:
        r = h.response
        assert r.status == 101
        assert r.header("upgrade", "").lower() == "websocket"
        assert r.header("connection", "").lower() == "upgrade"
        assert r.header("sec-websocket-origin") == origin
        assert r.header("sec-websocket-location") == "ws://%s%s" % (host_header(), path)
        assert not r.has("content-length")
        assert_no_cookie(r)
        assert h.send_key3() == Hixie76.CHALLENGE
        assert h.CHALLENGE == bytes([0xca, 0x34, 0x00, 0xd8, 0xa5, 0x08, 0x47, 0x97,
                                     0x2c, 0xd5, 0x71, 0x5a, 0xba, 0xbf, 0x43, 0x7b])
        assert h.recv() == "o"


def test_hixie76_location_keeps_query_string():
    path = ws_path() + "?a=1&b=2"
    with Hixie76(path) as h:
        assert h.response.header("sec-websocket-location") == "ws://%s%s" % (host_header(),
                                                                              path)


def test_hixie76_echo_and_close_handshake():
    with Hixie76(ws_path()) as h:
        h.send_key3()
        assert h.recv() == "o"
        h.send_text('["a"]')
        assert h.recv() == 'a["a"]'
        h.send_text('"b"')
        assert h.recv() == 'a["b"]'
        h.send_close()
        data = h.conn.read_until_eof(timeout=2)
        assert data in (b"", b"\xff\x00")


def test_hixie76_close_service_sends_c_frame():
    with Hixie76(ws_path("/close")) as h:
        h.send_key3()
        assert h.recv() == "o"
        assert h.recv() == 'c[3000,"Go away!"]'
        rest = h.conn.read_until_eof(timeout=2)
        assert rest in (b"", b"\xff\x00")


def test_hixie76_broken_json_closes_without_text_frame():
    with Hixie76(ws_path()) as h:
        h.send_key3()
        assert h.recv() == "o"
        h.send_text('["a')
        rest = h.conn.read_until_eof(timeout=2)
        assert rest in (b"", b"\xff\x00"), rest


def test_hixie76_length_prefixed_frame_closes():
    with Hixie76(ws_path()) as h:
        h.send_key3()
        assert h.recv() == "o"
        h.conn.send_raw(b"\x80\x03abc")
        rest = h.conn.read_until_eof(timeout=2)
        assert b"\x00" not in rest.replace(b"\xff\x00", b""), rest


def test_hixie76_invalid_key_gets_no_session():
    """§10.3: a key without spaces is invalid; the connection is closed, no o frame."""
    with HttpConnection() as c:
        c.send_request("GET", ws_path(), [("Upgrade", "WebSocket"), ("Connection", "Upgrade"),
                                          ("Origin", "http://x"),
                                          ("Sec-WebSocket-Key1", "12345"),
                                          ("Sec-WebSocket-Key2", Hixie76.KEY2)])
        c.send_raw(Hixie76.KEY3)
        try:
            data = c.read_until_eof(timeout=3)
        except OSError:  # socket.timeout
            raise AssertionError("connection still open 3 s after an invalid hixie-76 key; "
                                 "got %r" % c.buf[:200])
        assert b"\x00o\xff" not in data
        assert not data.startswith(b"HTTP/1.1 101"), data[:200]
