"""STOMP over TLS with stomp.py: ``[stomp] tls_listen`` and ``wss://`` on the HTTP listener.

Each module run makes a self-signed certificate for 127.0.0.1 and localhost (``cryptography``),
starts its own gateway with ``[server] tls_cert``/``tls_key`` and ``[stomp] tls_listen``, and
connects stomp.py with an ``ssl`` context that trusts only that certificate: over TCP
(``set_ssl``) and over raw WebSocket (``wss://``). A client that trusts nothing is refused.
"""

import datetime
import ipaddress
import os
import re
import ssl
import tempfile

import pytest
import stomp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import conftest
import stomp_client

TLS_RE = re.compile(r"STOMP over TLS listening on (127\.0\.0\.1:\d+)")
HTTPS_RE = re.compile(r"listening on https://(127\.0\.0\.1:\d+)")


def make_certificate(directory):
    """Write cert.pem and key.pem (P-256, valid for a day) into ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_gateway():
    workdir = tempfile.mkdtemp(prefix="stomp-tls-")
    cert, key = make_certificate(workdir)
    config = (
        '[server]\ntls_cert = "%s"\ntls_key = "%s"\n\n[stomp]\ntls_listen = "127.0.0.1:0"\n\n'
        '[[service]]\nprefix = "/stomp"\napp = "stomp"\n' % (cert, key)
    )
    with conftest.running_gateway(config, workdir) as gw:
        log = gw.log()
        tls_addr = TLS_RE.search(log)
        https_addr = HTTPS_RE.search(log)
        assert tls_addr and https_addr, log
        yield {
            "tcp": conftest._addr(tls_addr.group(1)),
            "https": conftest._addr(https_addr.group(1)),
            "ca": cert,
        }


def connect(conn):
    rec = stomp_client.Recorder()
    conn.set_listener("recorder", rec)
    conn.connect(wait=False)
    return rec


def round_trip(conn, rec, destination):
    rec.frame("CONNECTED")
    conn.subscribe(destination, id="s", receipt="subscribed")
    rec.receipt("subscribed")
    conn.send(destination, "through tls")
    assert [m.body for m in rec.messages(1)] == ["through tls"]
    conn.disconnect(receipt="bye")


def test_stomp_over_tls_with_a_trusted_certificate(tls_gateway):
    conn = stomp.Connection12([tls_gateway["tcp"]], reconnect_attempts_max=1,
                              timeout=stomp_client.WAIT)
    conn.set_ssl(for_hosts=[tls_gateway["tcp"]], ca_certs=tls_gateway["ca"])
    rec = connect(conn)
    round_trip(conn, rec, "/topic/tls-tcp")


def test_stomp_over_wss_with_a_trusted_certificate(tls_gateway):
    host, port = tls_gateway["https"]
    conn = stomp.WSStompConnection([(host, port)], ws_path="/stomp/websocket",
                                   header=["Sec-WebSocket-Protocol: v12.stomp"],
                                   reconnect_attempts_max=1, timeout=2 * stomp_client.WAIT)
    conn.set_ssl(for_hosts=[(host, port)], ca_certs=tls_gateway["ca"])
    rec = connect(conn)
    round_trip(conn, rec, "/topic/tls-wss")


def test_a_client_that_does_not_trust_the_certificate_is_refused(tls_gateway):
    context = ssl.create_default_context()
    with pytest.raises(ssl.SSLError):
        import socket

        with socket.create_connection(tls_gateway["tcp"], timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost"):
                pass
