"""The API blueprints (one module per resource) and what their views share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import current_app, request

from control.config import ControlConfig
from control.store import Store
from control.sweeper import ExpirySweeper
from control.urls import request_base

EXTENSION = "linx"


@dataclass
class Runtime:
    """Per-app state built once by ``create_app``: config, store, clock, expiry sweeper."""

    config: ControlConfig
    store: Store
    clock: Callable[[], float]
    sweeper: ExpirySweeper


def runtime() -> Runtime:
    return current_app.extensions[EXTENSION]


def base_url() -> str:
    """The base of this request's ``public_url``s (SPEC section 3 order)."""
    config = runtime().config
    return request_base(
        config.app_base_url, config.backend_domain, request.headers, request.scheme, request.host
    )
