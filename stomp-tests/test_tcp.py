"""stomp.py 9 against the gateway's STOMP-over-TCP listener, in STOMP 1.0, 1.1 and 1.2."""

import re

import pytest

from stomp_client import unique

VERSIONS = ["1.0", "1.1", "1.2"]

BODIES = [
    "first",
    "100% %41 </script> & <b>not markup</b>",
    "third: caf\u00e9 \u2713 \U0001F680",
]


def escaped_headers(version):
    """Header values that need escaping in 1.1/1.2; in 1.0 only a raw ':' is representable."""
    if version == "1.0":
        return {"x-colon": "a:b:c", "x-spaces": " padded "}
    return {
        "x-colon": "a:b:c",
        "x-newline": "line1\nline2",
        "x-backslash": "back\\slash",
        "x-all": "k:v\\n\nend",
        "x-spaces": " padded ",
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_connected_headers(clients, version):
    c = clients.tcp(version)
    h = c.connected.headers
    assert h["version"] == version
    assert h["server"].startswith("sockjs-gateway/")
    assert re.fullmatch(r"[a-z0-9]+", h["session"]), h
    assert "user-name" not in h, "anonymous session must not get user-name: %r" % h
    expected_hb = "0,0" if version == "1.0" else "10000,10000"
    assert h["heart-beat"] == expected_hb


@pytest.mark.parametrize("version", VERSIONS)
def test_login_sets_user_name(clients, version):
    c = clients.tcp(version, login="alice")
    assert c.connected.headers.get("user-name") == "alice"


@pytest.mark.parametrize("version", VERSIONS)
def test_three_messages_arrive_in_order_exactly(clients, version):
    dest = unique("/queue/order")
    sub = clients.tcp(version)
    sub.subscribe(dest, "s1")
    pub = clients.tcp(version)
    headers = escaped_headers(version)
    pub.conn.send(dest, BODIES[0])
    pub.conn.send(dest, BODIES[1], content_type="text/html;charset=utf-8")
    pub.conn.send(dest, BODIES[2], headers=dict(headers, receipt="sent-3"))
    pub.rec.receipt("sent-3")

    got = sub.rec.messages(3)
    assert [m.body for m in got] == BODIES
    for m in got:
        assert m.headers["destination"] == dest
        assert m.headers["subscription"] == "s1"
        assert "transaction" not in m.headers
        assert "receipt" not in m.headers
        assert "ack" not in m.headers, "ack:auto MESSAGE must carry no ack header"
    assert got[1].headers["content-type"] == "text/html;charset=utf-8"
    assert int(got[1].headers["content-length"]) == len(BODIES[1].encode("utf-8"))
    assert int(got[2].headers["content-length"]) == len(BODIES[2].encode("utf-8"))
    for name, value in headers.items():
        assert got[2].headers.get(name) == value, (name, got[2].headers)
    assert len({m.headers["message-id"] for m in got}) == 3
    sub.rec.expect_no_more_messages(3)


@pytest.mark.parametrize("version", VERSIONS)
def test_one_connection_sends_to_itself(clients, version):
    dest = unique("/topic/self")
    c = clients.tcp(version)
    c.subscribe(dest, "me")
    for body in BODIES:
        c.conn.send(dest, body)
    assert [m.body for m in c.rec.messages(3)] == BODIES
    c.rec.expect_no_more_messages(3)


@pytest.mark.parametrize("version", VERSIONS)
def test_client_ack_is_cumulative_and_the_rest_is_redelivered(clients, version):
    dest = unique("/queue/ack-client")
    c = clients.tcp(version)
    c.subscribe(dest, "a", ack="client")
    for body in ("m1", "m2", "m3"):
        c.conn.send(dest, body)
    got = c.rec.messages(3)
    assert [m.body for m in got] == ["m1", "m2", "m3"]
    if version == "1.2":
        assert all("ack" in m.headers for m in got), c.rec.describe()
    # First deliveries in a client ack mode say so (RabbitMQ clients read the header).
    assert all(m.headers.get("redelivered") == "false" for m in got), c.rec.describe()
    c.ack(got[1], receipt="acked")
    c.rec.receipt("acked")
    c.disconnect("bye")

    again = clients.tcp(version)
    again.subscribe(dest, "b", ack="client")
    redelivered = again.rec.messages(1)
    assert redelivered[0].body == "m3"
    assert redelivered[0].headers.get("redelivered") == "true"
    again.rec.expect_no_more_messages(1)


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_client_individual_ack_is_not_cumulative(clients, version):
    dest = unique("/queue/ack-individual")
    c = clients.tcp(version)
    c.subscribe(dest, "a", ack="client-individual")
    for body in ("m1", "m2", "m3"):
        c.conn.send(dest, body)
    got = c.rec.messages(3)
    assert [m.body for m in got] == ["m1", "m2", "m3"]
    c.ack(got[1], receipt="acked")
    c.rec.receipt("acked")
    c.disconnect("bye")

    again = clients.tcp(version)
    again.subscribe(dest, "b", ack="client-individual")
    redelivered = again.rec.messages(2)
    assert [m.body for m in redelivered] == ["m1", "m3"]
    assert all(m.headers.get("redelivered") == "true" for m in redelivered)
    for m in redelivered:
        again.ack(m)
    again.rec.expect_no_more_messages(2)


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_nack_redelivers_on_a_competing_queue(clients, version):
    dest = unique("/queue/nack")
    c = clients.tcp(version)
    c.subscribe(dest, "n", ack="client-individual")
    c.conn.send(dest, "retry me")
    first = c.rec.messages(1)[0]
    assert first.headers.get("redelivered") == "false"
    c.nack(first)
    second = c.rec.messages(2)[1]
    assert second.body == "retry me"
    assert second.headers.get("redelivered") == "true"


@pytest.mark.parametrize("version", VERSIONS)
def test_transactions_commit_delivers_and_abort_does_not(clients, version):
    dest = unique("/topic/tx")
    sub = clients.tcp(version)
    sub.subscribe(dest, "t")
    pub = clients.tcp(version)

    t1 = pub.conn.begin()
    pub.conn.send(dest, "aborted", headers={"transaction": t1})
    pub.conn.abort(t1, headers={"receipt": "aborted"})
    pub.rec.receipt("aborted")

    t2 = pub.conn.begin()
    pub.conn.send(dest, "B", headers={"transaction": t2})
    pub.conn.send(dest, "C", headers={"transaction": t2})
    sub.rec.expect_no_more_messages(0)
    pub.conn.commit(t2, headers={"receipt": "committed"})
    pub.rec.receipt("committed")

    got = sub.rec.messages(2)
    assert [m.body for m in got] == ["B", "C"]
    assert all("transaction" not in m.headers for m in got), sub.rec.describe()
    sub.rec.expect_no_more_messages(2)


@pytest.mark.parametrize("version", VERSIONS)
def test_disconnect_open_transaction_is_aborted(clients, version):
    dest = unique("/topic/tx-drop")
    sub = clients.tcp(version)
    sub.subscribe(dest, "t")
    pub = clients.tcp(version)
    t = pub.conn.begin()
    pub.conn.send(dest, "never", headers={"transaction": t})
    pub.disconnect("bye")
    sub.rec.expect_no_more_messages(0)


@pytest.mark.parametrize("version", VERSIONS)
def test_disconnect_with_receipt(clients, version):
    c = clients.tcp(version)
    receipt = c.disconnect("bye-%s" % version)
    assert receipt.headers["receipt-id"] == "bye-%s" % version
    assert not c.rec.of("ERROR"), c.rec.describe()
    assert not c.conn.is_connected()


@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_stops_delivery(clients, version):
    dest = unique("/topic/unsub")
    c = clients.tcp(version)
    c.subscribe(dest, "u")
    c.conn.send(dest, "before")
    c.rec.messages(1)
    if version == "1.0":
        c.conn.unsubscribe(id="u", headers={"receipt": "gone"})
    else:
        c.conn.unsubscribe("u", headers={"receipt": "gone"})
    c.rec.receipt("gone")
    c.conn.send(dest, "after")
    c.rec.expect_no_more_messages(1)
