"""stomp.py 9's WSStompConnection (STOMP 1.2) against the raw WebSocket at /stomp/websocket."""

import pytest

from stomp_client import unique

BODIES = ["first", "100% %41 </script>", "third: caf\u00e9 \u2713"]


def negotiated(client):
    """The Sec-WebSocket-Protocol of the 101 response, or None."""
    headers = client.conn.transport.socket.getheaders() or {}
    return headers.get("sec-websocket-protocol")


@pytest.mark.parametrize("binary_mode", [False, True], ids=["text", "binary"])
def test_connect_subscribe_send_receive_disconnect(clients, binary_mode):
    c = clients.websocket(binary_mode=binary_mode)
    assert negotiated(c) == "v12.stomp"
    assert c.connected.headers["version"] == "1.2"
    dest = unique("/queue/ws")
    c.subscribe(dest, "w")
    headers = {"x-colon": "a:b", "x-newline": "l1\nl2", "receipt": "sent-3"}
    for body in BODIES[:2]:
        c.conn.send(dest, body)
    c.conn.send(dest, BODIES[2], headers=headers)
    c.rec.receipt("sent-3")
    got = c.rec.messages(3)
    assert [m.body for m in got] == BODIES
    assert got[2].headers["x-colon"] == "a:b"
    assert got[2].headers["x-newline"] == "l1\nl2"
    c.rec.expect_no_more_messages(3)
    receipt = c.disconnect("ws-bye")
    assert receipt.headers["receipt-id"] == "ws-bye"


def test_websocket_and_tcp_share_one_broker(clients):
    dest = unique("/topic/bridge")
    ws = clients.websocket()
    tcp = clients.tcp("1.1")
    ws.subscribe(dest, "ws")
    tcp.subscribe(dest, "tcp")
    tcp.conn.send(dest, "from tcp")
    ws.conn.send(dest, "from ws")
    for c in (ws, tcp):
        assert sorted(m.body for m in c.rec.messages(2)) == ["from tcp", "from ws"]
        c.rec.expect_no_more_messages(2)


def test_no_subprotocol_offered_still_speaks_stomp(clients):
    c = clients.websocket(offer=None)
    assert negotiated(c) is None
    assert c.connected.headers["version"] == "1.2"
    dest = unique("/topic/plain")
    c.subscribe(dest, "p")
    c.conn.send(dest, "hi")
    assert c.rec.messages(1)[0].body == "hi"
    c.disconnect("plain-bye")


def test_subprotocol_does_not_decide_the_version(clients):
    # C15: only v10.stomp offered, CONNECT with accept-version:1.2 → version:1.2.
    c = clients.websocket(offer=("v10.stomp",))
    assert negotiated(c) == "v10.stomp"
    assert c.connected.headers["version"] == "1.2"
    c.disconnect("v10-bye")
