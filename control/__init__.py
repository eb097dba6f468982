"""Linx control plane: ``create_app`` builds the Flask app; nothing happens at import time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import Flask

from control.config import ControlConfig


def create_app(
    config: ControlConfig | None = None,
    *,
    clock: Callable[[], float] | None = None,
    redis_client: Any = None,
) -> Flask:
    """The WSGI app (gunicorn: ``control:create_app()``).

    ``config`` defaults to ``ControlConfig.from_env()``, which raises ``ConfigError`` naming
    the variable at fault (so gunicorn stops with a boot error). ``clock`` (Unix seconds)
    and ``redis_client`` are seams for tests; by default the real time and a client built by
    ``shared.redis_conn.make_client``. No connection is opened until the first request.
    """
    from control import console, errors, hooks, logs
    from control.api import EXTENSION, Runtime, admin, containers, openapi, services
    from control.store import Store
    from control.sweeper import ExpirySweeper
    from shared.redis_conn import make_client
    from shared.schema import Schema

    if config is None:
        config = ControlConfig.from_env()
    clock = clock or time.time
    client = redis_client if redis_client is not None else make_client(config.redis)
    store = Store(
        client,
        Schema(config.redis.key_prefix),
        clock,
        retention_secs=config.expired_retention_secs,
        host_routing_available=config.service_domain is not None,
    )
    sweeper = ExpirySweeper(
        lambda now: store.sweep_expired(now),
        clock,
        config.sweep_interval_secs,
        background=config.background_sweep,
    )
    runtime = Runtime(config, store, clock, sweeper)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False  # records keep the documented field order
    app.extensions[EXTENSION] = runtime
    errors.register(app)
    logs.register(app)  # first hook: the request id exists for every later one
    app.before_request(hooks.refuse_large_bodies)
    app.before_request(hooks.make_sweeper(runtime))
    for module in (admin, containers, services, openapi, console):
        app.register_blueprint(module.bp)
    sweeper.ensure_running()  # removal after retention needs no API traffic (SPEC section 7)
    return app
