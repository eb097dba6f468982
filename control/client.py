"""A small Python client for the Linx control plane API, for programs and for the ``linx`` CLI.

Example::

    from control.client import Client, LinxApiError

    linx = Client("https://linx.example.com", api_key=os.environ["LINX_API_KEY"])
    service = linx.publish("ctr_...", name="amp", target_port=7001, enable_websockets=True,
                           ttl_secs=3600)
    service = linx.wait_ready(service["service_id"], timeout=30)
    print(service["public_url"])

Every method returns the API's JSON exactly as answered (dicts and lists of the documented
records; see ``GET /api/openapi.json``), or None for a ``204``. Tenant routes authenticate
with ``api_key``, ``/api/admin/*`` with ``admin_token``; a method whose credential was not
given raises ``LinxCredentialsError`` before sending anything.

Failures raise subclasses of ``LinxError``:

- ``LinxApiError``: the API answered an error (``status``, ``code``, ``message``, and
  ``field`` for a validation error), e.g. ``404 service_not_found``;
- ``LinxConnectionError``: the API could not be reached or did not answer in time;
- ``LinxNotReadyError``: ``wait_ready`` saw a status that will not become ``ready`` on its own,
  or ran out of time (``code`` is the status, or ``timeout``).

No request is retried except the polling of ``wait_ready`` (API calls are not all
idempotent). Credentials are never part of an exception's message or of ``repr(client)``.
A ``Client`` holds a ``requests.Session``: use it from one thread, and ``close()`` it (or use
it as a context manager) when done.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import requests

from shared.records import AuthMode, ContainerState, CorsMode, RoutingMode, ServiceProtocol, Status

__all__ = [
    "Client",
    "LinxApiError",
    "LinxConnectionError",
    "LinxCredentialsError",
    "LinxError",
    "LinxNotReadyError",
]

DEFAULT_TIMEOUT = 10.0
# Statuses after which waiting longer cannot help: an expired service stays expired, and an
# "error" record needs a change by someone. "target_unreachable" is final only by default
# (``keep_waiting`` treats it as a target still starting).
_FINAL_STATUSES: tuple[Status, ...] = ("expired", "error")
_ERRNO = re.compile(r"\[Errno -?\d+\][^'\")]*")


class LinxError(Exception):
    """Base of every error this module raises. ``code`` is a snake_case reason."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LinxApiError(LinxError):
    """The API answered ``status`` with ``{"error": {"code", "message"[, "field"]}}``.

    An answer that is not Linx's error format (a front proxy's HTML 502, say) gets the code
    ``http_error`` and a message naming the status.
    """

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, HTTP {self.status})"


class LinxConnectionError(LinxError):
    """No answer: connection refused, DNS failure, TLS failure or timeout."""

    code = "connection_failed"


class LinxCredentialsError(LinxError):
    """The method needs an API key or the admin token and the client has none."""

    code = "missing_credentials"


class LinxNotReadyError(LinxError):
    """``wait_ready`` gave up. ``code`` is the service's last status (``target_unreachable``,
    ``expired``, ``error``) or ``timeout``; ``service`` is its last record (None if it never
    answered)."""

    def __init__(self, code: str, message: str, service: dict | None) -> None:
        super().__init__(message)
        self.code = code
        self.service = service


class Client:
    """The Linx control plane API at ``base_url`` (e.g. ``http://127.0.0.1:8000``).

    ``timeout`` (seconds) bounds each HTTP request. ``session`` may be a preconfigured
    ``requests.Session`` (proxies, CA bundle); by default the client makes its own.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        admin_token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._api_key = api_key or None
        self._admin_token = admin_token or None
        self._session = session or requests.Session()
        self._own_session = session is None

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    def close(self) -> None:
        """Close the HTTP connections (only those of a session the client made itself)."""
        if self._own_session:
            self._session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------------- transport
    def request(
        self, method: str, path: str, *, admin: bool = False, body: Any = None, params: dict | None = None
    ) -> Any:
        """Send one API request; return the decoded JSON answer (None for an empty one).

        ``path`` starts with ``/api/``. ``admin`` picks the admin token over the API key.
        Raises ``LinxCredentialsError``, ``LinxConnectionError`` or ``LinxApiError``.
        """
        credential = self._admin_token if admin else self._api_key
        if credential is None:
            what = "the admin token (LINX_ADMIN_TOKEN)" if admin else "an API key (LINX_API_KEY)"
            raise LinxCredentialsError(f"{method} {path} needs {what}")
        headers = {"Authorization": f"Bearer {credential}", "Accept": "application/json"}
        try:
            response = self._session.request(
                method,
                self.base_url + path,
                headers=headers,
                json=body,
                params=params,
                timeout=self.timeout,
            )
        except requests.Timeout:
            raise LinxConnectionError(f"no answer from the Linx API at {self.base_url} in {self.timeout:g}s")
        except requests.RequestException as exc:
            raise LinxConnectionError(
                f"cannot reach the Linx API at {self.base_url}: {connection_reason(exc)}"
            )
        if response.status_code >= 400:
            raise _api_error(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise LinxApiError(
                response.status_code, "invalid_response", f"the answer to {method} {path} is not JSON"
            )

    # ---------------------------------------------------------------- tenants (admin)
    def create_tenant(self, name: str) -> dict:
        """Create a tenant: ``{"tenant_id", "name", "created_at", "key_id", "api_key"}``.
        The API key is shown only in this answer."""
        return self.request("POST", "/api/admin/tenants", admin=True, body={"name": name})

    def list_proxies(self) -> list[dict]:
        """The live proxy replicas, from their heartbeats."""
        return self.request("GET", "/api/admin/proxies", admin=True)["proxies"]

    def list_tenants(self) -> list[dict]:
        """Every tenant (never a key)."""
        return self.request("GET", "/api/admin/tenants", admin=True)["tenants"]

    def get_tenant(self, tenant_id: str) -> dict:
        return self.request("GET", f"/api/admin/tenants/{_seg(tenant_id)}", admin=True)

    def create_key(self, tenant_id: str) -> dict:
        """A new API key for the tenant: ``{"key_id", "api_key", "created_at"}``."""
        return self.request("POST", f"/api/admin/tenants/{_seg(tenant_id)}/keys", admin=True)

    def revoke_key(self, tenant_id: str, key_id: str) -> None:
        """Revoke a key; effective immediately."""
        self.request("DELETE", f"/api/admin/tenants/{_seg(tenant_id)}/keys/{_seg(key_id)}", admin=True)

    # ------------------------------------------------------------- containers (admin)
    def register_container(
        self,
        tenant_id: str,
        address: str,
        *,
        name: str | None = None,
        container_id: str | None = None,
        state: ContainerState = "running",
        networking_enabled: bool = True,
        exec_ready: bool = True,
        network_ready: bool = True,
    ) -> dict:
        """Register a container of ``tenant_id`` listening at ``address`` (an IP literal).
        ``container_id`` is generated (``ctr_...``) when not given."""
        body: dict[str, Any] = {
            "tenant_id": tenant_id,
            "address": address,
            "state": state,
            "networking_enabled": networking_enabled,
            "exec_ready": exec_ready,
            "network_ready": network_ready,
        }
        if name is not None:
            body["name"] = name
        if container_id is not None:
            body["container_id"] = container_id
        return self.request("POST", "/api/admin/containers", admin=True, body=body)

    def patch_container(self, container_id: str, **changes: Any) -> dict:
        """Change any of ``address``, ``state``, ``networking_enabled``, ``exec_ready``,
        ``network_ready``; returns the new record."""
        return self.request("PATCH", f"/api/admin/containers/{_seg(container_id)}", admin=True, body=changes)

    def delete_container(self, container_id: str) -> None:
        """Delete a container and, with it, every service of it."""
        self.request("DELETE", f"/api/admin/containers/{_seg(container_id)}", admin=True)

    def admin_get_container(self, container_id: str) -> dict:
        """Any tenant's container (operator view)."""
        return self.request("GET", f"/api/admin/containers/{_seg(container_id)}", admin=True)

    def admin_list_containers(self, tenant_id: str | None = None) -> list[dict]:
        """Every container, or those of ``tenant_id`` (operator view)."""
        params = {"tenant_id": tenant_id} if tenant_id is not None else None
        return self.request("GET", "/api/admin/containers", admin=True, params=params)["containers"]

    # ------------------------------------------------------------ containers (tenant)
    def list_containers(self) -> list[dict]:
        """The API key's tenant's containers."""
        return self.request("GET", "/api/containers")["containers"]

    def get_container(self, container_id: str) -> dict:
        return self.request("GET", f"/api/containers/{_seg(container_id)}")

    # ------------------------------------------------------------------------ services
    def publish(
        self,
        container_id: str,
        name: str,
        target_port: int,
        *,
        enable_websockets: bool | None = None,
        auth_mode: AuthMode | None = None,
        ttl_secs: int | None = None,
        routing: RoutingMode | None = None,
        cors_preflight: CorsMode | None = None,
        protocol: ServiceProtocol | None = None,
        strip_prefix: bool | None = None,
    ) -> dict:
        """Publish ``target_port`` of a container: the new service record (with ``public_url``
        and its token). Options left at None take the server's defaults."""
        body: dict[str, Any] = {"name": name, "target_port": target_port}
        optional = {
            "enable_websockets": enable_websockets,
            "auth_mode": auth_mode,
            "ttl_secs": ttl_secs,
            "routing": routing,
            "cors_preflight": cors_preflight,
            "protocol": protocol,
            "strip_prefix": strip_prefix,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return self.request("POST", f"/api/containers/{_seg(container_id)}/services", body=body)

    def list_services(self, container_id: str) -> list[dict]:
        """The services published on a container."""
        return self.request("GET", f"/api/containers/{_seg(container_id)}/services")["services"]

    def get_service(self, service_id: str) -> dict:
        """A service record; ``status`` is its current readiness."""
        return self.request("GET", f"/api/services/{_seg(service_id)}")

    def patch_service(self, service_id: str, **changes: Any) -> dict:
        """Change any of ``ttl_secs`` (None: no expiry), ``auth_mode``, ``cors_preflight``,
        ``strip_prefix``."""
        return self.request("PATCH", f"/api/services/{_seg(service_id)}", body=changes)

    def delete_service(self, service_id: str) -> None:
        self.request("DELETE", f"/api/services/{_seg(service_id)}")

    def rotate_token(self, service_id: str) -> dict:
        """Sign a new token; every URL and cookie issued before stops working. Returns the
        record with the new ``public_url``."""
        return self.request("POST", f"/api/services/{_seg(service_id)}/rotate-token")

    # ---------------------------------------------------------------------- share links
    def create_share_link(
        self, service_id: str, *, ttl_secs: int | None = None, label: str | None = None
    ) -> dict:
        """A new share link: ``{"link_id", "label", "url", "expires_at", "created_at",
        "last_used_at"}``; ``url`` carries the link's token and is shown only here."""
        body = {k: v for k, v in (("ttl_secs", ttl_secs), ("label", label)) if v is not None}
        return self.request("POST", f"/api/services/{_seg(service_id)}/share-links", body=body)

    def list_share_links(self, service_id: str) -> list[dict]:
        """The service's share links (without their URLs)."""
        return self.request("GET", f"/api/services/{_seg(service_id)}/share-links")["share_links"]

    def delete_share_link(self, service_id: str, link_id: str) -> None:
        self.request("DELETE", f"/api/services/{_seg(service_id)}/share-links/{_seg(link_id)}")

    # -------------------------------------------------------------------------- waiting
    def wait_ready(
        self,
        service_id: str,
        timeout: float = 30.0,
        *,
        interval: float = 0.25,
        keep_waiting: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> dict:
        """Poll the service until its status is ``ready``; return that record.

        ``pending`` (no proxy has tried the target yet) and ``target_unreachable`` (an app
        that starts after its port was published is the normal case: proxies re-probe a
        refusing target every second in its first minute, then every
        ``LINX_PROBE_INTERVAL_SECS``) are waited through; with ``keep_waiting=False``
        ``target_unreachable`` raises at once. ``expired`` and ``error`` raise
        ``LinxNotReadyError`` at once, and a deleted service raises the API's 404. After
        ``timeout`` seconds it raises with code ``timeout``. A ``503`` (storage briefly
        unavailable) or a connection failure while polling is retried until the deadline; any
        other API error is raised as is.
        """
        deadline = time.monotonic() + timeout
        record: dict | None = None
        while True:
            try:
                record = self.get_service(service_id)
            except LinxApiError as exc:
                if exc.status != 503:
                    raise
            except LinxConnectionError:
                pass
            status = record["status"] if record is not None else None
            if status == "ready":
                return record
            if status in _FINAL_STATUSES or (status == "target_unreachable" and not keep_waiting):
                raise LinxNotReadyError(status, _not_ready_message(service_id, record), record)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LinxNotReadyError("timeout", _timeout_message(service_id, record, timeout), record)
            sleep(min(interval, remaining))


def _seg(value: str) -> str:
    """One URL path segment: ids never hold '/', and a stray one must not change the route."""
    return quote(str(value), safe="")


def connection_reason(exc: Exception) -> str:
    """The useful part of a ``requests`` error ("[Errno 111] Connection refused"), without
    the connection pool's noise."""
    found = _ERRNO.search(str(exc))
    return found.group(0) if found else type(exc).__name__


def _api_error(response: requests.Response) -> LinxApiError:
    try:
        error = response.json()["error"]
        code, message = error["code"], error["message"]
        if isinstance(code, str) and isinstance(message, str):
            field = error.get("field")
            return LinxApiError(
                response.status_code, code, message, field if isinstance(field, str) else None
            )
    except (ValueError, KeyError, TypeError):
        pass
    reason = response.reason or "error"
    return LinxApiError(response.status_code, "http_error", f"HTTP {response.status_code} {reason}")


def _not_ready_message(service_id: str, record: dict) -> str:
    status = record["status"]
    if status == "target_unreachable":
        return (
            f"service {service_id} is target_unreachable: the proxy could not connect to port "
            f"{record.get('target_port')} of container {record.get('container_id')}; check that the "
            "container is running and network-ready and that something listens on that port"
        )
    if status == "expired":
        return f"service {service_id} has expired (its TTL ran out); publish it again"
    return (
        f"service {service_id} is in status error: its record is inconsistent "
        "(its container may be gone); delete and publish it again"
    )


def _timeout_message(service_id: str, record: dict | None, timeout: float) -> str:
    if record is None:
        return f"service {service_id} could not be read within {timeout:g}s"
    status = record["status"]
    message = f"service {service_id} was not ready after {timeout:g}s (status {status})"
    if status == "pending":
        message += "; no proxy has tried its target yet: is a proxy running against the same Redis?"
    elif status == "target_unreachable":
        message += (
            f"; the proxy cannot connect to port {record.get('target_port')} of container "
            f"{record.get('container_id')}"
        )
    return message
