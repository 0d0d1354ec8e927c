"""The test services of spec §12.1: /echo, /close, /amplify, /broadcast, /ticker,
/disabled_websocket_echo and /cookie_needed_echo behave as specified."""

import json
import time

import pytest

from sockjs_client import (GET, POST, WebSocket, open_stream, session_url, url)


def amplify_xhr(message):
    s = session_url("/amplify")
    assert POST(s + "/xhr").body == b"o\n"
    assert POST(s + "/xhr_send", json.dumps([message])).status == 204
    body = POST(s + "/xhr").body
    assert body.startswith(b"a") and body.endswith(b"\n")
    return json.loads(body[1:-1])


@pytest.mark.parametrize("message,n", [
    ("3", 3), ("1", 1), ("0", 1), ("18", 18), ("19", 1), ("-2", 1), ("abc", 1), ("4.7", 4),
    ("", 1), ("10", 10),
])
def test_amplify_replies_with_two_to_the_n_x_characters(message, n):
    assert amplify_xhr(message) == ["x" * (2 ** n)]


def test_amplify_large_download_over_websocket():
    with WebSocket(session_url("/amplify") + "/websocket") as ws:
        assert ws.recv_text() == "o"
        ws.send_text('["15"]')
        assert ws.recv_text() == 'a["%s"]' % ("x" * 2 ** 15)


def _collect_until(ws, token, timeout):
    """Read a-frames until ``token`` arrives or ``timeout`` passes; True if it arrived."""
    deadline = time.monotonic() + timeout
    for _ in range(100):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            f = ws.recv_text(timeout=remaining)
        except OSError:  # socket.timeout
            return False
        if f.startswith("a") and token in json.loads(f[1:]):
            return True
    return False


def _wait_registered(sender, receivers):
    """The application is told of a session only after `o` is written (§6.2), so a message
    sent right after `o` may miss a session that is not registered yet. Send probes until
    every receiver gets one (bounded), then the real assertion follows."""
    for i in range(10):
        probe = "probe-%d-%f" % (i, time.time())
        sender(probe)
        if all(_collect_until(ws, probe, 0.5) for ws in receivers):
            return
    raise AssertionError("broadcast never reached every session")


def test_broadcast_reaches_every_open_session():
    """Two sessions both receive a message sent by one of them."""
    ws1 = WebSocket(session_url("/broadcast") + "/websocket")
    ws2 = WebSocket(session_url("/broadcast") + "/websocket")
    try:
        assert ws1.recv_text() == "o"
        assert ws2.recv_text() == "o"
        _wait_registered(lambda m: ws1.send_text(json.dumps([m])), [ws1, ws2])
        token = "hello-%f" % time.time()
        ws2.send_text(json.dumps([token]))
        assert _collect_until(ws1, token, 2)
        assert _collect_until(ws2, token, 2)
    finally:
        ws1.close()
        ws2.close()


def test_broadcast_reaches_http_and_websocket_sessions():
    s = session_url("/broadcast")
    assert POST(s + "/xhr").body == b"o\n"
    with WebSocket(session_url("/broadcast") + "/websocket") as ws:
        assert ws.recv_text() == "o"
        _wait_registered(lambda m: ws.send_text(json.dumps([m])), [ws])
        token = "from-xhr-%f" % time.time()
        assert POST(s + "/xhr_send", json.dumps([token])).status == 204
        assert _collect_until(ws, token, 2)
        got = []
        for _ in range(20):  # the xhr session got the probes too; drain until the token
            body = POST(s + "/xhr").body
            got += json.loads(body[1:])
            if token in got:
                break
        assert token in got


def test_ticker_sends_tick_every_second():
    s = session_url("/ticker")
    with open_stream("POST", s + "/xhr_streaming", body=b"") as c:
        c.read_chunk()
        assert c.read_chunk() == b"o\n"
        times = []
        for _ in range(2):
            assert c.read_chunk() == b'a["tick!"]\n'
            times.append(time.monotonic())
        gap = times[1] - times[0]
        assert 0.7 < gap < 1.5, gap


def test_ticker_over_websocket():
    with WebSocket(session_url("/ticker") + "/websocket") as ws:
        assert ws.recv_text() == "o"
        start = time.monotonic()
        assert ws.recv_text(timeout=2.5) == 'a["tick!"]'
        assert time.monotonic() - start < 1.6


@pytest.mark.parametrize("service", ["/echo", "/disabled_websocket_echo",
                                     "/cookie_needed_echo"])
def test_echo_services_echo(service):
    s = session_url(service)
    assert POST(s + "/xhr").body == b"o\n"
    assert POST(s + "/xhr_send", '["e1","e2"]').status == 204
    assert POST(s + "/xhr").body == b'a["e1","e2"]\n'


def test_close_service_closes_right_after_open_on_jsonp_and_eventsource():
    s = session_url("/close")
    assert GET(s + "/jsonp?c=x").body == b'/**/x("o");\r\n'
    assert GET(s + "/jsonp?c=x").body == b'/**/x("c[3000,\\"Go away!\\"]");\r\n'


def test_close_service_on_raw_websocket_sends_3000_go_away():
    with WebSocket(url("/close/websocket")) as ws:
        assert ws.recv(timeout=2) == ("close", 3000, "Go away!")
