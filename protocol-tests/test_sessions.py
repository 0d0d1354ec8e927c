"""Session lifecycle: spec §6 (creation with `o` at once, one receiver at a time and 2010,
queueing, disconnect delay, aborted receivers, server-initiated close, queue overflow, the
§6.9 hijack check) and §13.9 (`o` sent immediately). Checklist rows 5, 6, 7, 8, 42."""

import json
import time

import pytest

from sockjs_client import (GET, POST, HttpConnection, WebSocket, open_stream, session_url,
                           host_port, PRELUDE_XHR)

C2010 = 'c[2010,"Another connection still open"]'
GO_AWAY = 'c[3000,"Go away!"]'


def xhr_streaming(s):
    c = open_stream("POST", s + "/xhr_streaming", body=b"")
    assert c.response.status == 200
    return c


# -- `o` at once (§6.2, §13.9) --------------------------------------------------------------

def _first_frame(transport, s):
    if transport == "xhr":
        return POST(s + "/xhr").body, None
    if transport == "jsonp":
        return GET(s + "/jsonp?c=x").body, None
    if transport == "xhr_streaming":
        c = xhr_streaming(s)
        c.read_chunk()
    elif transport == "eventsource":
        c = open_stream("GET", s + "/eventsource")
        c.read_chunk()
    elif transport == "htmlfile":
        c = open_stream("GET", s + "/htmlfile?c=x")
        c.read_chunk()
    return c.read_chunk(), c


@pytest.mark.parametrize("transport,expected", [
    ("xhr", b"o\n"), ("jsonp", b'/**/x("o");\r\n'), ("xhr_streaming", b"o\n"),
    ("eventsource", b"data: o\r\n\r\n"), ("htmlfile", b'<script>\np("o");\n</script>\r\n'),
])
def test_open_frame_arrives_promptly(transport, expected):
    """§13.9: o well under sockjs-client's ~600 ms transport timeout."""
    start = time.monotonic()
    body, conn = _first_frame(transport, session_url())
    elapsed = time.monotonic() - start
    if conn:
        conn.close()
    assert body == expected
    assert elapsed < 0.5, "o took %.3f s" % elapsed


def test_open_frame_arrives_promptly_on_websocket():
    start = time.monotonic()
    with WebSocket(session_url() + "/websocket") as ws:
        assert ws.recv_text(timeout=1) == "o"
    assert time.monotonic() - start < 0.5


# -- one receiver at a time (§6.3) ----------------------------------------------------------

def test_xhr_streaming_second_receiver_gets_2010_and_first_is_unaffected():
    """Row 8."""
    s = session_url()
    with xhr_streaming(s) as r1:
        assert r1.read_chunk() == PRELUDE_XHR
        assert r1.read_chunk() == b"o\n"
        with xhr_streaming(s) as r2:
            assert r2.read_chunk() == PRELUDE_XHR
            assert r2.read_chunk() == (C2010 + "\n").encode()
            assert r2.read_chunk() == b""
        assert POST(s + "/xhr_send", '["still"]').status == 204
        assert r1.read_chunk() == b'a["still"]\n'


def test_eventsource_second_receiver_gets_2010_in_its_own_framing():
    s = session_url()
    with open_stream("GET", s + "/eventsource") as r1:
        r1.read_chunk()
        assert r1.read_chunk() == b"data: o\r\n\r\n"
        with open_stream("GET", s + "/eventsource") as r2:
            assert r2.read_chunk() == b"\r\n"
            assert r2.read_chunk() == ("data: %s\r\n\r\n" % C2010).encode()
            assert r2.read_chunk() == b""


def test_htmlfile_second_receiver_gets_2010_script():
    s = session_url()
    with open_stream("GET", s + "/htmlfile?c=x") as r1:
        r1.read_chunk()
        assert r1.read_chunk() == b'<script>\np("o");\n</script>\r\n'
        with open_stream("GET", s + "/htmlfile?c=x") as r2:
            assert len(r2.read_chunk()) > 1024
            assert r2.read_chunk() == ("<script>\np(%s);\n</script>\r\n"
                                       % json.dumps(C2010)).encode()
            assert r2.read_chunk() == b""


def test_xhr_poll_while_streaming_receiver_attached_gets_2010():
    s = session_url()
    with xhr_streaming(s) as r1:
        r1.read_chunk()
        r1.read_chunk()
        assert POST(s + "/xhr").body == (C2010 + "\n").encode()
        assert POST(s + "/xhr_send", '["x"]').status == 204
        assert r1.read_chunk() == b'a["x"]\n'


# -- aborted receivers (§6.6) ---------------------------------------------------------------

def test_aborted_xhr_poll_destroys_session_and_next_poll_gets_o():
    """Row 5; we destroy the session at once, so the next poll opens a new one."""
    s = session_url()
    assert POST(s + "/xhr").body == b"o\n"
    r2 = HttpConnection()
    r2.send_request("POST", s + "/xhr", body=b"")
    time.sleep(0.2)
    assert POST(s + "/xhr").body == (C2010 + "\n").encode()
    r2.close()  # abort, then immediately poll again
    assert POST(s + "/xhr").body == b"o\n"


def test_aborted_xhr_streaming_destroys_session_and_next_stream_gets_o():
    """Row 6."""
    s = session_url()
    r1 = xhr_streaming(s)
    assert r1.read_chunk() == PRELUDE_XHR
    assert r1.read_chunk() == b"o\n"
    with xhr_streaming(s) as r2:
        assert r2.read_chunk() == PRELUDE_XHR
        assert r2.read_chunk() == (C2010 + "\n").encode()
        assert r2.read_chunk() == b""
    r1.close()
    with xhr_streaming(s) as r3:
        assert r3.read_chunk() == PRELUDE_XHR
        assert r3.read_chunk() == b"o\n"


def test_aborted_eventsource_destroys_session():
    s = session_url()
    r1 = open_stream("GET", s + "/eventsource")
    r1.read_chunk()
    assert r1.read_chunk() == b"data: o\r\n\r\n"
    assert POST(s + "/xhr_send", '["queued?"]').status == 204
    assert r1.read_chunk() == b'data: a["queued?"]\r\n\r\n'
    r1.close()
    time.sleep(0.3)
    # The session is gone: sends are 404 and a new receiver starts over with o.
    assert POST(s + "/xhr_send", '["x"]').status == 404
    assert POST(s + "/xhr").body == b"o\n"


def test_aborted_xhr_poll_closes_session_immediately_not_after_disconnect_delay():
    s = session_url()
    assert POST(s + "/xhr").body == b"o\n"
    r = HttpConnection()
    r.send_request("POST", s + "/xhr", body=b"")
    time.sleep(0.2)
    r.close()
    time.sleep(0.3)
    assert POST(s + "/xhr_send", '["x"]').status == 404


# -- server-initiated close (§6.8) ----------------------------------------------------------

def test_close_service_xhr_poll_gets_o_then_close_frame_on_each_poll():
    """Row 42."""
    s = session_url("/close")
    assert POST(s + "/xhr").body == b"o\n"
    assert POST(s + "/xhr").body == (GO_AWAY + "\n").encode()
    assert POST(s + "/xhr").body == (GO_AWAY + "\n").encode()


def test_close_service_xhr_streaming_sends_close_frame_and_ends_twice():
    """Row 7."""
    s = session_url("/close")
    with xhr_streaming(s) as c:
        assert c.read_chunk() == PRELUDE_XHR
        assert c.read_chunk() == b"o\n"
        assert c.read_chunk() == (GO_AWAY + "\n").encode()
        assert c.read_chunk() == b""
    with xhr_streaming(s) as c:
        assert c.read_chunk() == PRELUDE_XHR
        assert c.read_chunk() == (GO_AWAY + "\n").encode()
        assert c.read_chunk() == b""


def test_close_service_eventsource_and_htmlfile_end_after_close_frame():
    s = session_url("/close")
    with open_stream("GET", s + "/eventsource") as c:
        assert c.read_chunk() == b"\r\n"
        assert c.read_chunk() == b"data: o\r\n\r\n"
        assert c.read_chunk() == ("data: %s\r\n\r\n" % GO_AWAY).encode()
        assert c.read_chunk() == b""
    with open_stream("GET", s + "/htmlfile?c=x") as c:
        assert len(c.read_chunk()) > 1024
        assert c.read_chunk() == ("<script>\np(%s);\n</script>\r\n"
                                  % json.dumps(GO_AWAY)).encode()
        assert c.read_chunk() == b""


def test_closed_session_expires_after_disconnect_delay_and_id_is_reusable():
    """§6.8: after the timer (5 s after the last request) the id starts a new session."""
    s = session_url("/close")
    assert POST(s + "/xhr").body == b"o\n"
    assert POST(s + "/xhr").body == (GO_AWAY + "\n").encode()
    time.sleep(6.5)
    assert POST(s + "/xhr").body == b"o\n"


# -- queue and disconnect delay (§6.4, §6.5) ------------------------------------------------

def test_detached_session_expires_after_disconnect_delay_rearmed_by_each_poll():
    """§6.5: default disconnect_delay 5 s, armed when a receiver detaches."""
    s = session_url()
    t0 = time.monotonic()
    assert POST(s + "/xhr").body == b"o\n"
    time.sleep(3)
    assert POST(s + "/xhr_send", '["a"]').status == 204
    assert POST(s + "/xhr").body == b'a["a"]\n'      # detaches again at ~3 s: expires ~8 s
    time.sleep(max(0, t0 + 6.5 - time.monotonic()))
    assert POST(s + "/xhr_send", '["b"]').status == 204, "expired before 5 s after detach"
    time.sleep(max(0, t0 + 9.5 - time.monotonic()))
    assert POST(s + "/xhr_send", '["c"]').status == 404, "alive 6.5 s after detach"
    assert POST(s + "/xhr").body == b"o\n"


def test_attached_receiver_keeps_session_alive_past_disconnect_delay():
    s = session_url()
    with xhr_streaming(s) as c:
        c.read_chunk()
        assert c.read_chunk() == b"o\n"
        time.sleep(6)
        assert POST(s + "/xhr_send", '["alive"]').status == 204
        assert c.read_chunk() == b'a["alive"]\n'


def test_messages_keep_order_across_receivers():
    s = session_url()
    assert POST(s + "/xhr").body == b"o\n"
    got = []
    for i in range(20):
        assert POST(s + "/xhr_send", json.dumps([str(i)])).status == 204
        if i % 3 == 0:
            body = POST(s + "/xhr").body
            got += json.loads(body[1:])
    body = POST(s + "/xhr").body
    got += json.loads(body[1:])
    assert got == [str(i) for i in range(20)]


def test_queue_overflow_closes_session_with_4500():
    """§6.4: max_queued_bytes 512 KiB, strategy terminate → c[4500,"Send limit exceeded"]."""
    s = session_url()
    assert POST(s + "/xhr").body == b"o\n"
    assert POST(s + "/xhr_send", json.dumps(["x" * (600 * 1024)])).status == 204
    assert POST(s + "/xhr").body == b'c[4500,"Send limit exceeded"]\n'


def test_queue_below_limit_is_delivered_whole():
    s = session_url()
    assert POST(s + "/xhr").body == b"o\n"
    msg = "y" * (200 * 1024)
    assert POST(s + "/xhr_send", json.dumps([msg])).status == 204
    assert POST(s + "/xhr").body == ('a["%s"]\n' % msg).encode()


# -- hijack check (§6.9) --------------------------------------------------------------------

def test_requests_from_another_address_get_404():
    """§6.9: an anonymous session is bound to the remote IP that created it."""
    host, _ = host_port()
    if host not in ("127.0.0.1", "localhost"):
        pytest.skip("needs the server on 127.0.0.1 to connect from 127.0.0.2")
    s = session_url()
    assert POST(s + "/xhr").body == b"o\n"
    with HttpConnection(source_address=("127.0.0.2", 0)) as c:
        r = c.request("POST", s + "/xhr_send", body=b'["x"]')
        assert r.status == 404
    with HttpConnection(source_address=("127.0.0.2", 0)) as c:
        r = c.request("POST", s + "/xhr", body=b"")
        assert r.status == 404
    assert POST(s + "/xhr_send", '["y"]').status == 204
    assert POST(s + "/xhr").body == b'a["y"]\n'
