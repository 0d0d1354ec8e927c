"""pytest setup for the stomp.py suite: start our own gateway and hand out STOMP clients.

The gateway binary is ``$GATEWAY_BIN`` (default ``target/debug/sockjs-gateway``, relative to the
repository root). It runs on 127.0.0.1:0 with ``--stomp-listen 127.0.0.1:0``; both addresses
are read from its log on stderr (the HTTP line is logged last). Every wait is bounded.
"""

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import stomp_client  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT = 20.0

# competing: acks and redelivery are observable (spec §5.5, §7.3); every test uses its own
# destination names, so stored messages never leak between tests.
CONFIG = """\
[[service]]
prefix = "/stomp"
app = "stomp"

[stomp]
queue_semantics = "competing"
# stomp.py's `username` is the CONNECT `login` header: test_login_sets_user_name names the user
# with it, which needs the explicit opt-in (no header names a user by default).
principal_header = "login"
"""

STOMP_RE = re.compile(r"STOMP over TCP listening on (127\.0\.0\.1:\d+)")
HTTP_RE = re.compile(r"listening on https?://(127\.0\.0\.1:\d+)")


class Gateway:
    """A running gateway: its STOMP-over-TCP and HTTP addresses as (host, port)."""

    def __init__(self, stomp_addr, http_addr, log_path):
        self.stomp_addr = stomp_addr
        self.http_addr = http_addr
        self.log_path = log_path

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()


def _addr(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def _binary():
    path = os.environ.get("GATEWAY_BIN", "target/debug/sockjs-gateway")
    if not os.path.isabs(path):
        path = os.path.join(REPO, path)
    return path


def binary():
    """The gateway binary under test."""
    return _binary()


@contextlib.contextmanager
def running_gateway(config_text, workdir):
    """Run a gateway with ``config_text`` (written to ``workdir``) until the block ends."""
    path = _binary()
    if not os.access(path, os.X_OK):
        pytest.exit("gateway binary %s not found (run 'cargo build --bins' or set GATEWAY_BIN)"
                    % path, returncode=2)
    config = os.path.join(workdir, "gateway.toml")
    with open(config, "w", encoding="utf-8") as f:
        f.write(config_text)
    log_path = os.path.join(workdir, "gateway.log")
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [path, "--config", config, "--listen", "127.0.0.1:0", "--stomp-listen", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, cwd=REPO)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        stomp_addr = http_addr = None
        while time.monotonic() < deadline:
            with open(log_path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            m_stomp, m_http = STOMP_RE.search(text), HTTP_RE.search(text)
            if m_stomp and m_http:
                stomp_addr, http_addr = _addr(m_stomp.group(1)), _addr(m_http.group(1))
                break
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        if stomp_addr is None:
            with open(log_path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            pytest.exit("gateway did not start within %.0f s (exit status %s); log:\n%s"
                        % (START_TIMEOUT, proc.poll(), text), returncode=2)
        yield Gateway(stomp_addr, http_addr, log_path)
    finally:
        _stop(proc)
        log.close()


@contextlib.contextmanager
def running_backend(*args):
    """Run ``fixtures/test_backend.py`` (the tests' HTTP application backend) on a free
    loopback port; yields its ``http://127.0.0.1:PORT``."""
    script = os.path.join(REPO, "fixtures", "test_backend.py")
    proc = subprocess.Popen([sys.executable, script, "--port", "0", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        ready = []
        reader = threading.Thread(target=lambda: ready.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        line = ready[0] if ready else ""
        if not line.startswith("listening on "):
            pytest.exit("the test backend did not start: %r" % line, returncode=2)
        yield "http://" + line.split()[-1]
    finally:
        _stop(proc)


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="session")
def gateway():
    with running_gateway(CONFIG, tempfile.mkdtemp(prefix="stomp-tests-")) as gw:
        yield gw


@pytest.fixture
def clients(gateway):
    """Opens STOMP clients for one test and closes whatever is still open afterwards."""
    pool = stomp_client.Pool(gateway)
    yield pool
    pool.close_all()
