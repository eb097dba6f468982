"""Fixtures for the hardening suite: real Redis, the control plane under gunicorn, proxy
processes (``python -m dataplane``) and the recording echo backend.

One control plane and one echo backend serve the whole session under their own key prefix;
each module starts the proxies it needs with the limits it tests, and stops them itself.
"""

from __future__ import annotations

import secrets

import pytest

from tests.hardening.support import Hardening
from tests.helpers.backend_process import EchoBackend
from tests.helpers.procs import Api, ControlPlane


@pytest.fixture(scope="session")
def hstack(redis_server):
    prefix = f"hd{secrets.token_hex(3)}:"
    backend = EchoBackend().start()
    control = ControlPlane(redis_server.url, prefix, APP_BASE_URL="https://linx.example.test")
    stack = Hardening(redis_server.url, prefix, control, Api(control.url), backend)
    try:
        control.wait_ready()
        yield stack
    finally:
        stack.close()
        backend.stop()
