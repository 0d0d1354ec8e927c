"""stomp.py 9 over TCP against a gateway with an HTTP application backend and a users file.

The backend is the tests' ``fixtures/test_backend.py``; the users file is made with the
gateway's own ``hash-password`` command (password on a pipe), so password logins
(``login``/``passcode``, what stomp.py clients send) are tested end to end.
"""

import subprocess
import tempfile

import pytest

from conftest import binary, running_backend, running_gateway
from stomp_client import Pool, unique

VERSIONS = ["1.0", "1.1", "1.2"]
PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def app_gateway():
    workdir = tempfile.mkdtemp(prefix="stomp-tests-backend-")
    line = subprocess.run([binary(), "hash-password", "--user", "alice", "--roles", "trader"],
                          input=PASSWORD + "\n", capture_output=True, text=True, timeout=60,
                          check=True).stdout.strip()
    assert line.startswith("alice:$argon2id$") and line.endswith(":trader"), line
    with open("%s/users" % workdir, "w", encoding="utf-8") as f:
        f.write("# made by sockjs-gateway hash-password\n%s\n" % line)
    with running_backend() as backend:
        config = """\
[[service]]
prefix = "/stomp"
app = "stomp"

[auth]
users_file = "users"

[[backend]]
destinations = ["/app/**"]
url = "%s/stomp"
disconnect_url = "%s/disconnect"
""" % (backend, backend)
        with running_gateway(config, workdir) as gw:
            yield gw


@pytest.fixture
def app_clients(app_gateway):
    pool = Pool(app_gateway)
    yield pool
    pool.close_all()


@pytest.mark.parametrize("version", VERSIONS)
def test_password_login_names_the_user(app_clients, version):
    c = app_clients.tcp(version, login="alice", passcode=PASSWORD)
    assert c.connected.headers.get("user-name") == "alice"


@pytest.mark.parametrize("login,passcode", [("alice", "wrong"), ("mallory", PASSWORD),
                                            (None, None)])
def test_bad_logins_get_an_error(app_clients, login, passcode):
    c = app_clients.tcp("1.2", login=login, passcode=passcode, expect_error=True)
    assert c.error.headers["message"] == "Authentication failed"
    expected = "log in with login and passcode" if login is None else \
        "unknown user or wrong password"
    assert expected in c.error.body, c.error.body
    c.rec.closed()


@pytest.mark.parametrize("version", VERSIONS)
def test_send_to_app_goes_through_the_backend_to_the_topic(app_clients, version):
    c = app_clients.tcp(version, login="alice", passcode=PASSWORD)
    c.subscribe("/topic/echo", "t")
    text = "hello %s %s" % (version, unique("x"))
    c.conn.send("/app/echo", text, headers={"receipt": "r1"})
    message = c.rec.wait(lambda: next((f for f in c.rec.frames
                                       if f.cmd == "MESSAGE" and f.body == text), None),
                         "the backend's answer on /topic/echo")
    assert message.headers["destination"] == "/topic/echo"
    assert message.headers["x-seen-by"] == "test-backend"
    receipt = c.rec.receipt("r1")
    assert c.rec.frames.index(message) < c.rec.frames.index(receipt), \
        "the RECEIPT follows the backend's answer"


def test_subscribe_mapping_answers_that_subscription_once(app_clients):
    c = app_clients.tcp("1.2", login="alice", passcode=PASSWORD)
    c.subscribe("/app/init", "init")
    [message] = c.rec.messages(1)
    assert message.headers["subscription"] == "init"
    assert message.headers["destination"] == "/app/init"
    assert message.body == "snapshot for alice"
    c.rec.expect_no_more_messages(1)


def test_send_to_user_reaches_the_senders_user_queue(app_clients):
    c = app_clients.tcp("1.2", login="alice", passcode=PASSWORD)
    c.subscribe("/user/queue/private", "p")
    c.conn.send("/app/private", "psst")
    [message] = c.rec.messages(1)
    assert message.headers["destination"] == "/user/queue/private"
    assert message.body == "private: psst"


def test_a_failing_backend_is_an_error_with_the_receipt_id_then_close(app_clients):
    c = app_clients.tcp("1.2", login="alice", passcode=PASSWORD)
    c.conn.send("/app/fail", "x", headers={"receipt": "boom"})
    error = c.rec.frame("ERROR")
    assert error.headers["message"] == "Backend error"
    assert error.headers["receipt-id"] == "boom"
    assert "answered 500" in error.body
    c.rec.closed()
