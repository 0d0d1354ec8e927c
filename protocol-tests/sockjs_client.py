"""Small SockJS test clients over plain sockets (standard library only).

* ``HttpConnection``: a raw HTTP/1.x client that sends exactly the bytes we ask for and reads a
  chunked response one HTTP chunk at a time, so chunk boundaries can be asserted.
* ``WebSocket``: a minimal RFC 6455 client (masked frames, text/binary/close/ping/pong).
* ``Hixie76``: a hixie-76 client that reads the 101 head before it sends key3.

Every socket has a timeout of at most ``TIMEOUT`` seconds and every read loop is bounded in
bytes and time. The server under test comes from the environment variable ``SOCKJS_URL``.
"""

import base64
import hashlib
import json
import os
import re
import socket
import struct
import time
import urllib.parse
import uuid

TIMEOUT = 5.0  # seconds; the cap for every socket operation
MAX_RESPONSE = 16 * 1024 * 1024  # bytes; no test reads more than this from one socket

NO_CACHE = "no-store, no-cache, no-transform, must-revalidate, max-age=0"
ONE_YEAR = "public, max-age=31536000"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

PRELUDE_XHR = b"h" * 2048 + b"\n"


def base_url():
    url = os.environ.get("SOCKJS_URL") or os.environ.get("GATEWAY_URL") or "http://127.0.0.1:8081"
    return url.rstrip("/")


def host_port():
    parsed = urllib.parse.urlsplit(base_url())
    if parsed.scheme != "http":
        raise ValueError("SOCKJS_URL must be a plain http URL: %r" % base_url())
    return parsed.hostname, parsed.port or 80


def host_header():
    return urllib.parse.urlsplit(base_url()).netloc


def path_prefix():
    """Any path in SOCKJS_URL before the service prefixes (usually empty)."""
    return urllib.parse.urlsplit(base_url()).path.rstrip("/")


def new_id():
    """A fresh random session id, so tests never share sessions."""
    return uuid.uuid4().hex[:12]


def session_url(service="/echo", server="000", session=None):
    """The path ``P/S/I`` for a fresh (or given) session."""
    return "%s%s/%s/%s" % (path_prefix(), service, server, session or new_id())


def url(path):
    return path_prefix() + path


class ProtocolError(Exception):
    pass


class Response:
    """A parsed HTTP response head, plus the body once it has been read."""

    def __init__(self, version, status, reason, headers):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value), in order
        self.body = None
        self.chunked = False
        self.chunk_size_lines = []

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def has(self, name):
        return self.header(name) is not None

    def __getitem__(self, name):
        return self.header(name)

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<Response %s %s %r body=%r>" % (self.status, self.reason, self.headers, self.body)


def _normalize_headers(headers):
    if headers is None:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)


class HttpConnection:
    """One TCP connection to the server, speaking raw HTTP/1.x."""

    def __init__(self, timeout=TIMEOUT, source_address=None):
        host, port = host_port()
        self.timeout = min(timeout, TIMEOUT)
        self.sock = socket.create_connection((host, port), timeout=self.timeout,
                                             source_address=source_address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        self.total_read = 0
        self.response = None

    # -- sending ---------------------------------------------------------------------------

    def send_request(self, method, path, headers=None, body=None, version="1.1",
                     content_length=True):
        """Send a request. ``Host`` is added unless given; ``Content-Length`` is added for a
        body unless ``content_length`` is False or a Content-Length/Transfer-Encoding is
        given. ``body`` may be bytes or str."""
        headers = _normalize_headers(headers)
        names = {k.lower() for k, _ in headers}
        if isinstance(body, str):
            body = body.encode("utf-8")
        lines = ["%s %s HTTP/%s" % (method, path, version)]
        if "host" not in names:
            lines.append("Host: %s" % host_header())
        for k, v in headers:
            lines.append("%s: %s" % (k, v))
        if (body is not None and content_length and "content-length" not in names
                and "transfer-encoding" not in names):
            lines.append("Content-Length: %d" % len(body))
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.send_raw(head + (body or b""))

    def send_raw(self, data):
        self.sock.sendall(data)

    # -- low-level reading -----------------------------------------------------------------

    def _fill(self, timeout=None):
        """Read more bytes into the buffer; returns False on EOF."""
        if self.eof:
            return False
        if self.total_read > MAX_RESPONSE:
            raise ProtocolError("response larger than %d bytes" % MAX_RESPONSE)
        self.sock.settimeout(min(timeout if timeout is not None else self.timeout, TIMEOUT))
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.total_read += len(data)
        self.buf += data
        return True

    def read_line(self, limit=65536):
        deadline = time.monotonic() + self.timeout
        while b"\r\n" not in self.buf:
            if len(self.buf) > limit:
                raise ProtocolError("line too long")
            if time.monotonic() > deadline:
                raise socket.timeout("timed out reading a line")
            if not self._fill():
                raise ProtocolError("EOF while reading a line; got %r" % self.buf)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_exact(self, n):
        deadline = time.monotonic() + self.timeout
        while len(self.buf) < n:
            if time.monotonic() > deadline:
                raise socket.timeout("timed out reading %d bytes" % n)
            if not self._fill():
                raise ProtocolError("EOF after %d of %d bytes: %r" % (len(self.buf), n, self.buf))
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_some(self, timeout=None):
        """Whatever bytes are buffered or arrive next (b"" on EOF)."""
        if not self.buf:
            self._fill(timeout)
        data, self.buf = self.buf, b""
        return data

    def read_until_eof(self, timeout=None, limit=MAX_RESPONSE):
        deadline = time.monotonic() + min(timeout or self.timeout, TIMEOUT)
        while not self.eof:
            if len(self.buf) > limit:
                raise ProtocolError("more than %d bytes before EOF" % limit)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("no EOF within the timeout")
            self._fill(remaining)
        data, self.buf = self.buf, b""
        return data

    def wait_eof(self, timeout):
        """True when the peer closes within ``timeout`` seconds with no further data."""
        if self.buf:
            return False
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                if not self._fill(remaining):
                    return True
            except socket.timeout:
                return False
            if self.buf:
                return False

    def data_pending(self, timeout):
        """True when any byte (or EOF) arrives within ``timeout`` seconds."""
        if self.buf or self.eof:
            return True
        try:
            self._fill(timeout)
        except socket.timeout:
            return False
        return bool(self.buf) or self.eof

    # -- HTTP reading ----------------------------------------------------------------------

    def read_head(self):
        """Read a status line and headers (skipping any 100 Continue)."""
        for _ in range(3):
            line = self.read_line()
            m = re.match(rb"HTTP/(\d\.\d) (\d{3})(?: (.*))?$", line)
            if not m:
                raise ProtocolError("bad status line %r" % line)
            headers = []
            for _ in range(200):
                h = self.read_line()
                if not h:
                    break
                if b":" not in h:
                    raise ProtocolError("bad header line %r" % h)
                k, v = h.split(b":", 1)
                headers.append((k.decode("latin-1").strip(), v.decode("latin-1").strip()))
            else:
                raise ProtocolError("too many headers")
            resp = Response(m.group(1).decode(), int(m.group(2)),
                            (m.group(3) or b"").decode("latin-1"), headers)
            if resp.status != 100:
                te = (resp.header("transfer-encoding") or "").lower()
                resp.chunked = "chunked" in te
                self.response = resp
                return resp
        raise ProtocolError("too many interim responses")

    def read_chunk(self):
        """Read exactly one HTTP chunk; b"" for the terminating chunk (trailers consumed)."""
        size_line = self.read_line()
        self.response.chunk_size_lines.append(size_line)
        size_text = size_line.split(b";", 1)[0].strip()
        if not re.match(rb"^[0-9a-fA-F]+$", size_text):
            raise ProtocolError("bad chunk size line %r" % size_line)
        size = int(size_text, 16)
        if size == 0:
            for _ in range(100):
                if self.read_line() == b"":
                    return b""
            raise ProtocolError("too many trailer lines")
        data = self.read_exact(size)
        crlf = self.read_exact(2)
        if crlf != b"\r\n":
            raise ProtocolError("chunk not followed by CRLF: %r" % crlf)
        return data

    def read_body(self, method="GET"):
        """Read the whole body of the current response according to its framing."""
        resp = self.response
        if method == "HEAD" or resp.status in (101, 204, 304) or 100 <= resp.status < 200:
            resp.body = b""
            return resp.body
        if resp.chunked:
            parts = []
            for _ in range(100000):
                c = self.read_chunk()
                if c == b"":
                    break
                parts.append(c)
            resp.body = b"".join(parts)
        elif resp.header("content-length") is not None:
            resp.body = self.read_exact(int(resp.header("content-length")))
        else:
            resp.body = self.read_until_eof()
        return resp.body

    def request(self, method, path, headers=None, body=None, version="1.1", **kw):
        self.send_request(method, path, headers, body, version, **kw)
        self.read_head()
        self.read_body(method)
        return self.response

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def request(method, path, headers=None, body=None, version="1.1", **kw):
    """One request on a fresh connection; returns the Response with its body read."""
    with HttpConnection() as c:
        return c.request(method, path, headers, body, version, **kw)


def GET(path, headers=None, **kw):
    return request("GET", path, headers, **kw)


def POST(path, body=None, headers=None, **kw):
    return request("POST", path, headers, body, **kw)


def OPTIONS(path, headers=None, **kw):
    return request("OPTIONS", path, headers, **kw)


def open_stream(method, path, headers=None, body=None, version="1.1", **kw):
    """Send a request and read only the response head; the caller reads chunks."""
    c = HttpConnection(**kw)
    c.send_request(method, path, headers, body, version)
    c.read_head()
    return c


def xhr_send(session_path, messages, headers=None):
    body = json.dumps(messages) if not isinstance(messages, (bytes, str)) else messages
    return POST(session_path + "/xhr_send", body, headers)


# -- frame helpers --------------------------------------------------------------------------

def parse_frame(text):
    """Split a SockJS frame into (type, payload)."""
    if text == "o":
        return ("o", None)
    if text == "h":
        return ("h", None)
    if text.startswith("a"):
        return ("a", json.loads(text[1:]))
    if text.startswith("c"):
        return ("c", json.loads(text[1:]))
    raise ProtocolError("unknown frame %r" % text)


def ws_accept(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode("ascii")).digest()).decode()


def http_date_ok(value):
    """True for an IMF-fixdate such as ``Mon, 22 Nov 2027 03:50:32 GMT``."""
    return bool(re.match(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d "
                         r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
                         r"\d\d:\d\d:\d\d GMT$", value or ""))


# -- RFC 6455 -------------------------------------------------------------------------------

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class WebSocketClosed(Exception):
    pass


class WebSocket:
    """A minimal RFC 6455 client. ``self.response`` is the handshake response; when it is
    not a 101, the socket is left for the caller to inspect (``self.conn``)."""

    def __init__(self, path, headers=None, key=None, version="13", origin=None,
                 protocols=None, timeout=TIMEOUT, expect_upgrade=True):
        self.key = key or base64.b64encode(os.urandom(16)).decode()
        hdrs = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", self.key)]
        if version is not None:
            hdrs.append(("Sec-WebSocket-Version", version))
        if origin is not None:
            hdrs.append(("Origin", origin))
        if protocols:
            hdrs.append(("Sec-WebSocket-Protocol", ", ".join(protocols)))
        hdrs += _normalize_headers(headers)
        self.conn = HttpConnection(timeout=timeout)
        self.conn.send_request("GET", path, hdrs)
        self.response = self.conn.read_head()
        if self.response.status != 101:
            if expect_upgrade:
                self.conn.read_body()
                raise ProtocolError("handshake failed: %r" % self.response)
        self.closed = False

    # sending
    def send_frame(self, opcode, payload=b"", fin=True, mask=True, rsv=0):
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
        else:
            head = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
        if mask:
            key = os.urandom(4)
            masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if n < 4096 else \
                _mask_fast(payload, key)
            self.conn.send_raw(head + key + masked)
        else:
            self.conn.send_raw(head + payload)

    def send_text(self, text):
        self.send_frame(OP_TEXT, text)

    def send_binary(self, data):
        self.send_frame(OP_BINARY, data)

    def send_ping(self, data=b""):
        self.send_frame(OP_PING, data)

    def send_close(self, code=None, reason=""):
        payload = b"" if code is None else struct.pack("!H", code) + reason.encode("utf-8")
        self.send_frame(OP_CLOSE, payload)

    # receiving
    def recv_frame(self, timeout=None):
        """(fin, opcode, payload) of the next frame. Raises WebSocketClosed on EOF."""
        c = self.conn
        old = c.timeout
        if timeout is not None:
            c.timeout = min(timeout, TIMEOUT)
        try:
            try:
                b0, b1 = c.read_exact(2)
            except ProtocolError:
                raise WebSocketClosed("EOF")
            if b1 & 0x80:
                raise ProtocolError("server frame is masked")
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", c.read_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", c.read_exact(8))[0]
            if n > MAX_RESPONSE:
                raise ProtocolError("frame too large")
            return bool(b0 & 0x80), b0 & 0x0F, c.read_exact(n)
        finally:
            c.timeout = old

    def recv(self, timeout=None):
        """The next message: ('text', str), ('binary', bytes), ('close', code, reason),
        ('ping', bytes) or ('pong', bytes). Fragments are reassembled."""
        parts, first_op = [], None
        for _ in range(10000):
            fin, op, payload = self.recv_frame(timeout)
            if op == OP_CLOSE:
                self.closed = True
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return ("close", code, payload[2:].decode("utf-8", "replace"))
            if op == OP_PING:
                return ("ping", payload)
            if op == OP_PONG:
                return ("pong", payload)
            if op in (OP_TEXT, OP_BINARY):
                first_op, parts = op, [payload]
            elif op == OP_CONT:
                parts.append(payload)
            else:
                raise ProtocolError("unknown opcode %d" % op)
            if fin:
                data = b"".join(parts)
                if first_op == OP_TEXT:
                    return ("text", data.decode("utf-8"))
                return ("binary", data)
        raise ProtocolError("too many fragments")

    def recv_text(self, timeout=None):
        """The next text message, answering and skipping pings."""
        for _ in range(100):
            msg = self.recv(timeout)
            if msg[0] == "ping":
                self.send_frame(OP_PONG, msg[1])
                continue
            if msg[0] != "text":
                raise ProtocolError("expected a text message, got %r" % (msg,))
            return msg[1]
        raise ProtocolError("too many pings")

    def wait_eof(self, timeout=2.0):
        return self.conn.wait_eof(timeout)

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _mask_fast(payload, key):
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


# -- hixie-76 -------------------------------------------------------------------------------

def hixie76_key_value(key):
    digits = int("".join(ch for ch in key if ch.isdigit()))
    spaces = key.count(" ")
    return digits // spaces


def hixie76_challenge(key1, key2, key3):
    return hashlib.md5(struct.pack("!II", hixie76_key_value(key1), hixie76_key_value(key2))
                       + key3).digest()


class Hixie76:
    """A hixie-76 client. The request head goes first, without key3; ``self.response`` is the
    101 head read before key3 is sent. Call ``send_key3`` next."""

    KEY1 = "4 @1  46546xW%0l 1 5"
    KEY2 = "12998 5 Y3 1  .P00"
    KEY3 = b"aaaaaaaa"
    CHALLENGE = bytes.fromhex("ca3400d8a50847972cd5715ababf437b")

    def __init__(self, path, origin="http://example.com", key1=KEY1, key2=KEY2,
                 host=None, timeout=TIMEOUT):
        self.conn = HttpConnection(timeout=timeout)
        hdrs = [("Upgrade", "WebSocket"), ("Connection", "Upgrade")]
        if host is not None:
            hdrs.insert(0, ("Host", host))
        if origin is not None:
            hdrs.append(("Origin", origin))
        hdrs += [("Sec-WebSocket-Key1", key1), ("Sec-WebSocket-Key2", key2)]
        self.conn.send_request("GET", path, hdrs)
        self.response = self.conn.read_head()

    def send_key3(self, key3=KEY3):
        self.conn.send_raw(key3)
        return self.conn.read_exact(16)

    def send_text(self, text):
        self.conn.send_raw(b"\x00" + text.encode("utf-8") + b"\xff")

    def send_close(self):
        self.conn.send_raw(b"\xff\x00")

    def recv(self):
        """The next text frame as str, or None for the closing handshake."""
        b = self.conn.read_exact(1)
        if b == b"\xff":
            if self.conn.read_exact(1) != b"\x00":
                raise ProtocolError("bad closing frame")
            return None
        if b != b"\x00":
            raise ProtocolError("unexpected frame type %r" % b)
        deadline = time.monotonic() + TIMEOUT
        while b"\xff" not in self.conn.buf:
            if time.monotonic() > deadline or len(self.conn.buf) > MAX_RESPONSE:
                raise socket.timeout("no frame end")
            if not self.conn._fill():
                raise ProtocolError("EOF inside a frame")
        data, self.conn.buf = self.conn.buf.split(b"\xff", 1)
        return data.decode("utf-8")

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- assertions shared by the test files ----------------------------------------------------

def assert_content_type(r, expected):
    assert r.header("content-type") == expected, \
        "Content-Type %r, expected %r" % (r.header("content-type"), expected)


def assert_no_cache(r):
    assert r.header("cache-control") == NO_CACHE, "Cache-Control %r" % r.header("cache-control")
    assert not r.has("expires"), "unexpected Expires %r" % r.header("expires")
    assert not r.has("last-modified"), "unexpected Last-Modified"


def assert_one_year_cache(r):
    assert r.header("cache-control") == ONE_YEAR, "Cache-Control %r" % r.header("cache-control")
    assert http_date_ok(r.header("expires")), "Expires %r" % r.header("expires")
    expires = parse_http_date(r.header("expires"))
    assert abs(expires - (time.time() + 31536000)) < 300, "Expires %r" % r.header("expires")
    assert not r.has("last-modified")


def parse_http_date(value):
    import email.utils
    return email.utils.parsedate_to_datetime(value).timestamp()


def assert_cors(r, origin):
    """CORS of §8.1 for a request sent with ``Origin: origin`` (None = no Origin)."""
    if origin is None:
        assert r.header("access-control-allow-origin") == "*", \
            "ACAO %r" % r.header("access-control-allow-origin")
        assert not r.has("access-control-allow-credentials"), "credentials with ACAO *"
    else:
        assert r.header("access-control-allow-origin") == origin, \
            "ACAO %r, expected %r" % (r.header("access-control-allow-origin"), origin)
        assert r.header("access-control-allow-credentials") == "true"
    vary = [v.strip().lower() for val in r.header_all("vary") for v in val.split(",")]
    assert "origin" in vary, "Vary %r" % r.header_all("vary")


def assert_no_cors(r):
    for h in ("access-control-allow-origin", "access-control-allow-credentials",
              "access-control-allow-methods", "access-control-allow-headers",
              "access-control-max-age"):
        assert not r.has(h), "unexpected %s: %r" % (h, r.header(h))


def assert_no_cookie(r):
    assert not r.has("set-cookie"), "unexpected Set-Cookie %r" % r.header("set-cookie")


def assert_jsessionid(r, value="dummy"):
    cookie = r.header("set-cookie")
    assert cookie is not None, "no Set-Cookie"
    parts = [p.strip() for p in cookie.split(";")]
    assert parts[0] == "JSESSIONID=%s" % value, cookie
    assert len(parts) > 1 and parts[1] == "path=/", cookie
