"""The network guard itself: no test, and no process a test starts, may reach beyond loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import warnings

import pytest
from pytest_socket import SocketConnectBlockedError


def test_test_process_cannot_reach_internet():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(SocketConnectBlockedError):
                s.connect(("93.184.216.34", 80))
    finally:
        s.close()


def test_loopback_is_allowed():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        client.connect(server.getsockname())
    finally:
        client.close()
        server.close()


def test_subprocesses_are_guarded_too(subprocess_env):
    code = (
        "import socket\n"
        "s = socket.socket()\n"
        "try:\n"
        "    s.connect(('93.184.216.34', 80))\n"
        "except OSError as e:\n"
        "    print('BLOCKED', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True, timeout=60)
    assert "BLOCKED" in out.stdout and "loopback" in out.stdout
