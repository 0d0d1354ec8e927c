"""The STOMP relay (``[stomp.relay]``, shared and per-session modes) against a real RabbitMQ with
rabbitmq_stomp.

Runs when ``RABBITMQ_STOMP_PORT`` names a private RabbitMQ node's STOMP port (``scripts/proxy-tests``
starts one, with ``RABBIT_NODE`` and ``RABBIT_DIR`` for ``rabbitmqctl``); skipped otherwise.
The gateway relays ``/topic``, ``/queue``, ``/exchange`` and ``/amq/queue`` with a pool of two
broker connections; stomp.py clients talk to the gateway, and one talks to RabbitMQ directly.

A SUBSCRIBE's RECEIPT comes once the broker subscription is confirmed too (the relay's own
SUBSCRIBE to RabbitMQ asked for a RECEIPT), so anything published after it reaches the
subscriber, whoever publishes; the tests rely on that, except where a probe is named.
"""

import json
import os
import re
import subprocess
import urllib.request
import tempfile
import time
import uuid

import pytest
import stomp

import conftest
import stomp_client
from stomp_client import WAIT

PORT = os.environ.get("RABBITMQ_STOMP_PORT")
pytestmark = pytest.mark.skipif(not PORT, reason="RABBITMQ_STOMP_PORT is not set (scripts/proxy-tests sets it)")

POOL = 2
ADMIN_KEY = "relay-test-key"


def rabbitmqctl(*args):
    env = dict(os.environ, RABBITMQ_CONF_ENV_FILE=os.path.join(os.environ["RABBIT_DIR"], "env.conf"))
    return subprocess.run(["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", os.environ["RABBIT_NODE"], *args],
                          env=env, capture_output=True, text=True, timeout=60, check=True).stdout


@pytest.fixture(scope="module")
def relay_gateway():
    config = (
        '[[service]]\nprefix = "/stomp"\napp = "stomp"\n\n'
        '[stomp]\nprincipal_header = "login"\nallow_client_send_to_user = true\n\n'
        '[stomp.relay]\naddress = "127.0.0.1:%s"\npool_size = %d\nheartbeat_ms = 2000\n\n'
        '[admin]\nlisten = "127.0.0.1:0"\napi_key = "%s"\n' % (PORT, POOL, ADMIN_KEY)
    )
    with conftest.running_gateway(config, tempfile.mkdtemp(prefix="stomp-relay-")) as gw:
        deadline = time.monotonic() + WAIT
        while gw.log().count("STOMP relay connected") < POOL:
            assert time.monotonic() < deadline, gw.log()
            time.sleep(0.05)
        yield gw


@pytest.fixture
def clients(relay_gateway):
    pool = stomp_client.Pool(relay_gateway)
    yield pool
    pool.close_all()


def unique(prefix):
    """A destination nobody else uses, in RabbitMQ's syntax (one name, no further '/')."""
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


def direct():
    """A stomp.py client connected to RabbitMQ itself, not through the gateway."""
    conn = stomp.Connection12([("127.0.0.1", int(PORT))], reconnect_attempts_max=3, timeout=WAIT,
                              vhost="/")
    rec = stomp_client.Recorder()
    conn.set_listener("recorder", rec)
    conn.connect("guest", "guest", wait=False)
    rec.frame("CONNECTED")
    return conn, rec


def bodies(rec):
    return [m.body for m in rec.of("MESSAGE")]


def until_live(sender, destination, *recorders):
    """Send probes until one reaches every recorder (the broker subscription is active), then
    forget what was received."""
    deadline = time.monotonic() + WAIT
    while True:
        probe = "probe-" + uuid.uuid4().hex[:6]
        sender.send(destination, probe)
        time.sleep(0.1)
        if all(probe in bodies(r) for r in recorders):
            break
        assert time.monotonic() < deadline, "the relay never subscribed %s at the broker" % destination
    time.sleep(0.2)
    for r in recorders:
        with r.cond:
            r.frames = [f for f in r.frames if f.cmd != "MESSAGE"]


def live_subscriber(clients, prefix):
    """A fresh destination under ``prefix``, an auto-ack subscriber to it whose broker
    subscription is live, and a sender."""
    dest = unique(prefix)
    subscriber = clients.tcp("1.2")
    subscriber.subscribe(dest, "s")
    sender = clients.tcp("1.2")
    until_live(sender.conn, dest, subscriber.rec)
    return dest, subscriber, sender


def test_topic_fan_out_goes_through_one_broker_subscription(clients):
    dest = unique("/topic/relay")
    subs = [clients.tcp("1.2") for _ in range(5)]
    for i, c in enumerate(subs):
        c.subscribe(dest, "s%d" % i)
    sender = clients.tcp("1.2")
    for i in range(3):
        sender.conn.send(dest, "m%d" % i)
    for c in subs:
        assert [m.body for m in c.rec.messages(3)] == ["m0", "m1", "m2"]
        c.rec.expect_no_more_messages(3)
    # However many sessions subscribe, the gateway holds the pool's connections only.
    # (Counted on the wire: the TCP connections to the broker's STOMP port; nothing else in
    # this test connects there.)
    out = subprocess.run(["ss", "-Htn", "state", "established", "( dport = :%s )" % PORT],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    connections = [line for line in out.splitlines() if line.strip()]
    assert len(connections) == POOL, connections


def test_messages_published_at_the_broker_reach_gateway_subscribers(clients):
    dest = unique("/topic/relay-direct")
    conn, _ = direct()
    c = clients.tcp("1.2")
    c.subscribe(dest, "s")
    try:
        # No probe: the RECEIPT of the SUBSCRIBE above already means RabbitMQ routes here.
        conn.send(dest, "from rabbitmq", headers={"x-origin": "broker"})
        message = c.rec.messages(1)[0]
        assert message.body == "from rabbitmq"
        assert message.headers.get("x-origin") == "broker"
        assert message.headers["destination"] == dest
    finally:
        conn.disconnect()


def test_queue_and_exchange_destinations_round_trip(clients):
    for dest in (unique("/queue/relay"), "/exchange/amq.direct/" + uuid.uuid4().hex[:8]):
        c = clients.tcp("1.2")
        c.subscribe(dest, "s")
        sender = clients.tcp("1.1")
        until_live(sender.conn, dest, c.rec)
        sender.conn.send(dest, "to " + dest)
        assert [m.body for m in c.rec.messages(1)] == ["to " + dest]


def test_a_transaction_is_relayed_on_commit_and_prefetch_holds_until_the_ack(clients):
    # An auto-ack watcher shares the pool's broker subscription; the client-ack subscriber
    # gets a broker connection of its session's own, where RabbitMQ applies prefetch-count.
    dest, _watcher, sender = live_subscriber(clients, "/topic/relay-tx")
    c = clients.tcp("1.2")
    c.subscribe(dest, "s", ack="client-individual", **{"prefetch-count": "1"})
    tx = "tx-" + uuid.uuid4().hex[:6]
    sender.conn.begin(tx)
    sender.conn.send(dest, "t1", transaction=tx)
    sender.conn.send(dest, "t2", transaction=tx)
    time.sleep(0.3)
    sender.conn.commit(tx)
    first = c.rec.wait(lambda: [m for m in c.rec.of("MESSAGE") if m.body == "t1"], "t1")[0]
    assert first.headers["redelivered"] == "false"
    # prefetch-count:1 holds t2 back until t1 is ACKed.
    time.sleep(stomp_client.QUIET)
    assert "t2" not in bodies(c.rec)
    c.ack(first)
    c.rec.wait(lambda: "t2" in bodies(c.rec), "t2 after the ACK")


def test_user_destinations_stay_on_the_node(clients):
    alice = clients.tcp("1.2", login="alice")
    alice.subscribe("/user/queue/notify", "n")
    bob = clients.tcp("1.2", login="bob")
    bob.conn.send("/user/alice/queue/notify", "hello alice")
    message = alice.rec.messages(1)[0]
    assert message.body == "hello alice"
    assert message.headers["destination"] == "/user/queue/notify"


def test_a_pattern_under_a_relayed_prefix_is_refused(clients):
    c = clients.tcp("1.2")
    c.subscribe("/topic/relay/**", "p", receipt=False)
    error = c.rec.frame("ERROR")
    assert error.headers["message"] == "Invalid header: destination"
    assert "relayed prefix" in error.body


def test_destinations_rabbitmq_would_refuse_are_errors_that_cut_nobody_else(clients):
    dest, c, sender = live_subscriber(clients, "/topic/relay-ok")
    bad_sub = clients.tcp("1.2")
    bad_sub.subscribe("/topic/a/b", "x", receipt=False)
    error = bad_sub.rec.frame("ERROR")
    assert error.headers["message"] == "Invalid header: destination"
    assert "routing keys use '.'" in error.body
    bad_send = clients.tcp("1.2")
    bad_send.conn.send("/queue/a/b", "nowhere")
    assert bad_send.rec.frame("ERROR").headers["message"] == "Invalid header: destination"
    # The pooled broker connections were not cut: the good subscription still delivers.
    sender.conn.send(dest, "still here")
    c.rec.wait(lambda: "still here" in bodies(c.rec), "a delivery after the refused frames")


def broker_connections():
    """The TCP connections to the broker's STOMP port, counted on the wire."""
    out = subprocess.run(["ss", "-Htn", "state", "established", "( dport = :%s )" % PORT],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return len([line for line in out.splitlines() if line.strip()])


def wait_for(predicate, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_the_nodes_topic_queue_is_exclusive(clients):
    """RabbitMQ 4 deprecates transient non-exclusive queues: the node's queue for a topic is
    exclusive (it lives as long as the pool connection that consumes it)."""
    dest = unique("/topic/relay-excl")
    c = clients.tcp("1.2")
    c.subscribe(dest, "s")
    key = dest[len("/topic/"):]
    bindings = rabbitmqctl("list_bindings", "-q", "source_name", "destination_name", "routing_key")
    queues = [line.split("\t")[1] for line in bindings.splitlines()
              if line.split("\t")[0] == "amq.topic" and line.split("\t")[-1] == key]
    assert len(queues) == 1, bindings
    listed = rabbitmqctl("list_queues", "-q", "name", "exclusive", "durable")
    row = [line.split("\t") for line in listed.splitlines() if line.split("\t")[0] == queues[0]]
    assert row and row[0][1:] == ["true", "false"], listed


def test_client_acks_are_the_brokers_own(clients):
    """A client-ack subscription has its session's own broker connection: what the client does
    not ACK, RabbitMQ redelivers (after a NACK, and after the session is gone)."""
    dest = unique("/queue/relay-acks")
    before = broker_connections()
    c = clients.tcp("1.2")
    c.subscribe(dest, "s", ack="client-individual")
    assert broker_connections() == before + 1
    sender = clients.tcp("1.2")
    sender.conn.send(dest, "job-1")
    first = c.rec.messages(1)[0]
    assert (first.body, first.headers["redelivered"]) == ("job-1", "false"), first.headers
    # The message id the client sees is the broker's: the ACK it sends names it there.
    c.nack(first)
    again = c.rec.wait(lambda: [m for m in c.rec.of("MESSAGE") if m.headers["redelivered"] == "true"],
                       "the NACKed message, redelivered by RabbitMQ")[0]
    assert again.body == "job-1"
    # Not ACKed and the session ends: RabbitMQ requeues it for the next consumer.
    c.abandon()
    wait_for(lambda: broker_connections() == before, "the session's broker connection closes")
    d = clients.tcp("1.2")
    d.subscribe(dest, "s2", ack="client")
    redelivered = d.rec.messages(1)[0]
    assert (redelivered.body, redelivered.headers["redelivered"]) == ("job-1", "true")
    d.ack(redelivered, receipt="acked")
    d.rec.receipt("acked")
    d.conn.unsubscribe("s2")
    # ACKed at the broker: nobody gets it again.
    e = clients.tcp("1.2")
    e.subscribe(dest, "s3", ack="client")
    e.rec.expect_no_more_messages(0)


def test_a_durable_subscription_keeps_what_was_sent_while_away(clients):
    dest = unique("/topic/relay-durable")
    name = "durable-" + uuid.uuid4().hex[:8]
    durable = {"durable": "true", "auto-delete": "false"}
    c = clients.tcp("1.2")
    c.subscribe(dest, name, **durable)
    c.disconnect("bye")
    conn, _ = direct()
    try:
        conn.send(dest, "while away")
    finally:
        conn.disconnect()
    back = clients.tcp("1.2")
    back.subscribe(dest, name, **durable)
    assert [m.body for m in back.rec.messages(1)] == ["while away"]


def test_a_broker_error_on_a_sessions_connection_closes_that_session_only(clients):
    dest, calm, sender = live_subscriber(clients, "/topic/relay-calm")
    doomed = clients.tcp("1.2")
    # RabbitMQ refuses a subscription to a queue that does not exist (an ERROR that ends its
    # connection): only this session's own connection carries it.
    doomed.subscribe("/amq/queue/" + unique("missing"), "m", ack="client", receipt=False)
    error = doomed.rec.frame("ERROR")
    assert error.headers["message"].startswith("Broker error: "), error.headers
    assert "not_found" in error.headers["message"].lower() or "NOT_FOUND" in error.body, error
    doomed.rec.closed()
    sender.conn.send(dest, "still here")
    calm.rec.wait(lambda: "still here" in bodies(calm.rec), "a delivery after the other session's broker error")


def admin(gw, path):
    """GET an admin endpoint of the gateway (the fixture's admin listener, with its key)."""
    m = re.search(r"admin listener at http://([0-9.]+:[0-9]+)", gw.log())
    assert m, gw.log()
    req = urllib.request.Request("http://%s%s" % (m.group(1), path),
                                 headers={"Authorization": "Bearer " + ADMIN_KEY})
    with urllib.request.urlopen(req, timeout=WAIT) as resp:
        return resp.read().decode()


def relay_stats(gw):
    return json.loads(admin(gw, "/api/stats"))["relay"]


def test_api_stats_and_metrics_show_the_pool(clients, relay_gateway):
    dest = unique("/topic/relay-stats")
    c = clients.tcp("1.2")
    c.subscribe(dest, "s")
    stats = relay_stats(relay_gateway)
    assert stats["broker"] == "127.0.0.1:%s" % PORT, stats
    assert stats["mode"] == "shared"
    assert (stats["pool_size"], stats["connected"]) == (POOL, POOL), stats
    assert [conn["state"] for conn in stats["connections"]] == ["connected"] * POOL
    wanted = sum(conn["destinations"] for conn in stats["connections"])
    assert wanted >= 1 and stats["broker_subscriptions"] >= 1, stats
    assert sum(conn["confirmed"] for conn in stats["connections"]) >= 1, stats
    metrics = admin(relay_gateway, "/metrics")
    up = [line for line in metrics.splitlines() if line.startswith("sockjs_gateway_relay_connection_up{")]
    assert len(up) == POOL and all(line.endswith(" 1") for line in up), up
    assert re.search(r"^sockjs_gateway_relay_received_total \d+$", metrics, re.M), metrics
    # Unsubscribing drops the interest, and the pool shows one destination fewer.
    c.conn.unsubscribe("s")
    deadline = time.monotonic() + WAIT
    while sum(conn["destinations"] for conn in relay_stats(relay_gateway)["connections"]) != wanted - 1:
        assert time.monotonic() < deadline, relay_stats(relay_gateway)
        time.sleep(0.05)


def test_a_broker_restart_is_an_error_for_senders_then_recovers(clients, relay_gateway):
    dest, c, sender = live_subscriber(clients, "/topic/relay-restart")
    rabbitmqctl("stop_app")
    try:
        # Once the relay has seen its connections drop, a SEND gets ERROR Broker unavailable.
        doomed = clients.tcp("1.2")
        deadline = time.monotonic() + WAIT
        while not doomed.rec.of("ERROR"):
            assert time.monotonic() < deadline, doomed.rec.describe()
            doomed.conn.send(dest, "while down")
            time.sleep(0.2)
        error = doomed.rec.of("ERROR")[0]
        assert error.headers["message"] == "Broker unavailable", error.headers
        # /api/stats says which connections are down.
        stats = relay_stats(relay_gateway)
        assert stats["connected"] < POOL and "down" in [c["state"] for c in stats["connections"]], stats
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
    # The relay reconnects and subscribes again by itself; the subscriber never resubscribed.
    fresh = clients.tcp("1.2")
    deadline = time.monotonic() + 30
    while "after restart" not in bodies(c.rec):
        assert time.monotonic() < deadline, "no delivery after the broker came back"
        if fresh.rec.of("ERROR"):
            fresh = clients.tcp("1.2")
        fresh.conn.send(dest, "after restart")
        time.sleep(0.3)
    deadline = time.monotonic() + WAIT
    while relay_stats(relay_gateway)["connected"] != POOL:
        assert time.monotonic() < deadline, relay_stats(relay_gateway)
        time.sleep(0.1)


@pytest.fixture(scope="module")
def per_session_gateway():
    config = (
        '[[service]]\nprefix = "/stomp"\napp = "stomp"\n\n'
        '[stomp.relay]\naddress = "127.0.0.1:%s"\nmode = "per-session"\npool_size = 1\n'
        'login = "guest"\npasscode = "guest"\n\n'
        '[admin]\nlisten = "127.0.0.1:0"\napi_key = "%s"\n' % (PORT, ADMIN_KEY)
    )
    with conftest.running_gateway(config, tempfile.mkdtemp(prefix="stomp-relay-ps-")) as gw:
        wait_for(lambda: "STOMP relay connected" in gw.log(), gw.log())
        yield gw


def test_per_session_mode_gives_every_session_its_own_broker_connection(per_session_gateway):
    pool = stomp_client.Pool(per_session_gateway)
    try:
        dest = unique("/topic/relay-ps")
        before = broker_connections()
        subs = [pool.tcp("1.2") for _ in range(3)]
        for i, c in enumerate(subs):
            c.subscribe(dest, "s%d" % i)
        assert broker_connections() == before + 3
        sender = pool.tcp("1.1")
        sender.conn.send(dest, "m0")
        tx = "tx-" + uuid.uuid4().hex[:6]
        sender.conn.begin(tx)
        sender.conn.send(dest, "m1", transaction=tx)
        sender.conn.commit(tx)
        for c in subs:
            assert [m.body for m in c.rec.messages(2)] == ["m0", "m1"]
            c.rec.expect_no_more_messages(2)
        # The sender's SENDs went on a connection of its own, too.
        assert broker_connections() == before + 4
        stats = relay_stats(per_session_gateway)
        assert stats["mode"] == "per-session", stats
        assert stats["sessions_with_own_connection"] == 4, stats
        assert stats["session_connections_up"] == 4, stats
        metrics = admin(per_session_gateway, "/metrics")
        assert re.search(r"^sockjs_gateway_relay_session_connections 4$", metrics, re.M), metrics
    finally:
        pool.close_all()
    wait_for(lambda: broker_connections() == before, "the sessions' broker connections close")
    assert relay_stats(per_session_gateway)["sessions_with_own_connection"] == 0


REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_cli(*args):
    return subprocess.run(["redis-cli", "-u", REDIS_URL, *args], capture_output=True, text=True,
                          timeout=30, check=True).stdout


@pytest.fixture(scope="module")
def relay_cluster():
    """Two nodes relaying to the same RabbitMQ and joined by Redis (a prefix of their own)."""
    prefix = "sgrelay-%s:" % uuid.uuid4().hex[:8]
    config = (
        '[[service]]\nprefix = "/stomp"\napp = "stomp"\n\n'
        '[stomp]\nprincipal_header = "login"\nallow_client_send_to_user = true\n\n'
        '[stomp.relay]\naddress = "127.0.0.1:%s"\npool_size = 1\n\n'
        '[cluster]\nredis = "%s"\nnode_id = "%%s"\nchannel_prefix = "%s"\n' % (PORT, REDIS_URL, prefix)
    )
    try:
        with conftest.running_gateway(config % "rc-a", tempfile.mkdtemp(prefix="stomp-relay-ca-")) as a, \
                conftest.running_gateway(config % "rc-b", tempfile.mkdtemp(prefix="stomp-relay-cb-")) as b:
            for gw in (a, b):
                wait_for(lambda: "STOMP relay connected" in gw.log(), gw.log())
            yield a, b
    finally:
        keys = redis_cli("--scan", "--pattern", prefix + "*").split()
        if keys:
            redis_cli("DEL", *keys)


def test_two_nodes_on_rabbitmq_and_redis_deliver_once_each_way(relay_cluster):
    node_a, node_b = relay_cluster
    on_a, on_b = stomp_client.Pool(node_a), stomp_client.Pool(node_b)
    try:
        # A relayed topic crosses nodes through RabbitMQ only: one copy, not a second one
        # through Redis.
        dest = unique("/topic/relay-cluster")
        subscriber = on_b.tcp("1.2")
        subscriber.subscribe(dest, "s")
        sender = on_a.tcp("1.2")
        sender.conn.send(dest, "across")
        assert [m.body for m in subscriber.rec.messages(1)] == ["across"]
        subscriber.rec.expect_no_more_messages(1)
        # A user destination stays off RabbitMQ and crosses nodes through Redis (the node
        # subscribes to alice's channel as her session opens: asynchronous, so retried).
        alice = on_b.tcp("1.2", login="alice")
        alice.subscribe("/user/queue/notify", "n")
        bob = on_a.tcp("1.2", login="bob")
        sent = []
        deadline = time.monotonic() + WAIT
        while not alice.rec.of("MESSAGE"):
            assert time.monotonic() < deadline, alice.rec.describe()
            sent.append("hi alice %d" % len(sent))
            bob.conn.send("/user/alice/queue/notify", sent[-1])
            time.sleep(0.2)
        time.sleep(stomp_client.QUIET)
        got = bodies(alice.rec)
        assert len(got) == len(set(got)) and set(got) <= set(sent), got
        assert alice.rec.of("MESSAGE")[0].headers["destination"] == "/user/queue/notify"
    finally:
        on_a.close_all()
        on_b.close_all()
