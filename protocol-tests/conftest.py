"""pytest setup: make sockjs_client importable and fail fast when the server is down."""

import os
import socket
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sockjs_client  # noqa: E402


def pytest_report_header(config):
    return "sockjs server: %s" % sockjs_client.base_url()


def pytest_sessionstart(session):
    if session.config.option.collectonly:
        return
    host, port = sockjs_client.host_port()
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as e:
        pytest.exit("cannot connect to the SockJS server at %s (%s); set SOCKJS_URL"
                    % (sockjs_client.base_url(), e), returncode=2)
