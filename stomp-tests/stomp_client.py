"""Thin, bounded wrappers around stomp.py 9 connections for the tests.

stomp.py's own waits (``connect(wait=True)``, ``disconnect()`` with a receipt) have no upper
bound, so the tests never use them directly: frames are recorded by a listener and every wait
here gives up after ``WAIT`` seconds with a message naming what was expected.
"""

import threading
import time
import uuid

import stomp

WAIT = 10.0
"""Upper bound of every wait for a frame, a receipt or a close."""

QUIET = 0.3
"""How long to watch for frames that must not arrive."""

CONNECTIONS = {
    "1.0": stomp.Connection10,
    "1.1": stomp.Connection11,
    "1.2": stomp.Connection12,
}


def unique(prefix):
    """A destination nobody else in this run uses."""
    return "%s/%s" % (prefix, uuid.uuid4().hex[:12])


class Recorder(stomp.ConnectionListener):
    """Records every frame a connection receives, in order, and lets tests wait for them."""

    def __init__(self):
        self.cond = threading.Condition()
        self.frames = []
        self.disconnected = False

    def _add(self, frame):
        with self.cond:
            self.frames.append(frame)
            self.cond.notify_all()

    def on_connected(self, frame):
        self._add(frame)

    def on_message(self, frame):
        self._add(frame)

    def on_receipt(self, frame):
        self._add(frame)

    def on_error(self, frame):
        self._add(frame)

    def on_disconnected(self):
        with self.cond:
            self.disconnected = True
            self.cond.notify_all()

    def wait(self, predicate, what, timeout=WAIT):
        """Wait until ``predicate()`` (called under the lock) is truthy; return its value."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out after %.1f s waiting for %s; frames so far: %s"
                                         % (timeout, what, self.describe()))
                self.cond.wait(left)

    def of(self, cmd):
        with self.cond:
            return [f for f in self.frames if f.cmd == cmd]

    def describe(self):
        return [(f.cmd, dict(f.headers), f.body) for f in self.frames]

    def frame(self, cmd):
        """The first frame with this command, waiting for it."""
        return self.wait(lambda: next((f for f in self.frames if f.cmd == cmd), None), cmd)

    def receipt(self, receipt_id):
        return self.wait(
            lambda: next((f for f in self.frames
                          if f.cmd == "RECEIPT" and f.headers.get("receipt-id") == receipt_id),
                         None),
            "RECEIPT receipt-id:%s" % receipt_id)

    def messages(self, count):
        """Wait until ``count`` MESSAGE frames arrived; return the first ``count``."""
        def enough():
            got = [f for f in self.frames if f.cmd == "MESSAGE"]
            return got[:count] if len(got) >= count else None
        return self.wait(enough, "%d MESSAGE frames" % count)

    def closed(self):
        self.wait(lambda: self.disconnected, "the connection to close")

    def expect_no_more_messages(self, count):
        """Assert that exactly ``count`` MESSAGE frames arrive within QUIET seconds of now."""
        time.sleep(QUIET)
        got = self.of("MESSAGE")
        assert len(got) == count, "expected exactly %d MESSAGE frames, got %s" % (
            count, self.describe())


class Client:
    """One STOMP connection plus the recorder of everything it received."""

    def __init__(self, conn, recorder, version):
        self.conn = conn
        self.rec = recorder
        self.version = version
        self.connected = None

    def subscribe(self, destination, sub_id, ack="auto", receipt=True, **headers):
        """SUBSCRIBE, and wait for its RECEIPT unless ``receipt`` is False."""
        if receipt:
            headers["receipt"] = "sub-%s" % sub_id
        if self.version == "1.0":
            self.conn.subscribe(destination, id=sub_id, ack=ack, headers=headers)
        else:
            self.conn.subscribe(destination, sub_id, ack=ack, headers=headers)
        if receipt:
            self.rec.receipt("sub-%s" % sub_id)

    def ack(self, message, receipt=None):
        """ACK a MESSAGE the way this version names it (spec §5.5)."""
        h = message.headers
        if self.version == "1.0":
            self.conn.ack(h["message-id"], receipt=receipt)
        elif self.version == "1.1":
            self.conn.ack(h["message-id"], h["subscription"], receipt=receipt)
        else:
            self.conn.ack(h["ack"], receipt=receipt)

    def nack(self, message, receipt=None):
        h = message.headers
        if self.version == "1.1":
            self.conn.nack(h["message-id"], h["subscription"], receipt=receipt)
        else:
            self.conn.nack(h["ack"], receipt=receipt)

    def disconnect(self, receipt):
        """DISCONNECT with a receipt; wait for the RECEIPT and for the connection to end."""
        done = threading.Event()

        def run():
            try:
                self.conn.disconnect(receipt=receipt)
            finally:
                done.set()

        threading.Thread(target=run, daemon=True).start()
        frame = self.rec.receipt(receipt)
        assert done.wait(WAIT), "stomp.py's disconnect() did not return within %.0f s" % WAIT
        self.rec.closed()
        return frame

    def abandon(self):
        """Drop the socket without DISCONNECT (bounded; used in teardown)."""
        try:
            self.conn.transport.disconnect_socket()
        except Exception:  # noqa: BLE001 - teardown must not fail the test
            pass


class Pool:
    """Opens clients against one gateway and closes the leftovers at teardown."""

    def __init__(self, gateway):
        self.gateway = gateway
        self.open = []

    def _start(self, conn, version, login, headers, passcode=None, expect_error=False):
        rec = Recorder()
        conn.set_listener("recorder", rec)
        client = Client(conn, rec, version)
        self.open.append(client)
        conn.connect(username=login, passcode=passcode, wait=False, headers=headers or {})
        if expect_error:
            client.error = rec.frame("ERROR")
            return client
        client.connected = rec.frame("CONNECTED")
        errors = rec.of("ERROR")
        assert not errors, rec.describe()
        return client

    def tcp(self, version, login=None, headers=None, passcode=None, expect_error=False):
        """A STOMP ``version`` client over plain TCP, connected (CONNECTED received), or with
        ``expect_error`` the client whose CONNECT was answered with ERROR (``client.error``)."""
        conn = CONNECTIONS[version]([self.gateway.stomp_addr], reconnect_attempts_max=1,
                                    timeout=WAIT)
        return self._start(conn, version, login, headers, passcode, expect_error)

    def websocket(self, offer=("v10.stomp", "v11.stomp", "v12.stomp"), binary_mode=False,
                  login=None, headers=None):
        """A STOMP 1.2 client over raw WebSocket at /stomp/websocket, connected.

        ``offer`` is the Sec-WebSocket-Protocol list (None: no header). The socket timeout is
        also websocket-client's read timeout, so it is kept above any idle period in a test.
        """
        ws_headers = []
        if offer:
            ws_headers.append("Sec-WebSocket-Protocol: %s" % ", ".join(offer))
        conn = stomp.WSStompConnection([self.gateway.http_addr], ws_path="/stomp/websocket",
                                       header=ws_headers, reconnect_attempts_max=1,
                                       timeout=2 * WAIT, binary_mode=binary_mode)
        return self._start(conn, "1.2", login, headers)

    def close_all(self):
        for client in self.open:
            client.abandon()
        self.open = []
