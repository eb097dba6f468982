"""Real-browser fixtures: headless Chromium driven by Selenium, app processes, a host-routing world.

The browser is Debian's ``chromium`` with its ``chromium-driver`` (``.ci/run`` installs both);
``LINX_CHROMIUM`` / ``LINX_CHROMEDRIVER`` point elsewhere. Selenium Manager never runs: the driver
path is explicit and ``SE_OFFLINE=true``. Without the binaries the tests are skipped on a
developer's machine, but fail where ``LINX_REQUIRE_BROWSER=1`` or ``CI`` is set, so CI can never
skip them silently.

On a failure the ``browser`` fixture's test gets a screenshot, the page source, the browser
console and the current URL saved under ``test-artifacts/browser/<test>/`` (``LINX_TEST_ARTIFACTS``
moves the root); the directory is printed in the failure report.
"""

from __future__ import annotations

import os
import re
import secrets
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import stack  # noqa: F401  (the session stack: Redis, control, proxy)
from tests.helpers.procs import ROOT, Api, ControlPlane, Proxy

SERVICE_DOMAIN = "svc.linx.test"
BASE_HOST = "linx.test"
ARTIFACTS_KEY = pytest.StashKey[list[tuple[str, Path]]]()

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
CHROMEDRIVER_CANDIDATES = ("/usr/bin/chromedriver", "chromedriver")

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1200,900",
    # host routing without DNS: every service label and the base host resolve to loopback
    f"--host-resolver-rules=MAP *.{SERVICE_DOMAIN} 127.0.0.1, MAP {BASE_HOST} 127.0.0.1",
)


def _find(env_name: str, candidates: tuple[str, ...]) -> str | None:
    explicit = os.environ.get(env_name)
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    return None


def browser_required() -> bool:
    return os.environ.get("LINX_REQUIRE_BROWSER") == "1" or bool(os.environ.get("CI"))


def browser_binaries() -> tuple[str, str]:
    chromium = _find("LINX_CHROMIUM", CHROMIUM_CANDIDATES)
    driver = _find("LINX_CHROMEDRIVER", CHROMEDRIVER_CANDIDATES)
    if chromium and driver:
        return chromium, driver
    why = (
        f"headless Chromium not found (chromium: {chromium}, chromedriver: {driver}); "
        "install Debian's chromium and chromium-driver (.ci/run does) or set LINX_CHROMIUM/LINX_CHROMEDRIVER"
    )
    if browser_required():
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


def artifacts_root() -> Path:
    return Path(os.environ.get("LINX_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "browser"


def attach_log(request: pytest.FixtureRequest, name: str, path: str | Path) -> None:
    """Copy this file into the test's artifact directory if the test fails."""
    request.node.stash.setdefault(ARTIFACTS_KEY, []).append((name, Path(path)))


@pytest.fixture(scope="session", autouse=True)
def browser_installed() -> tuple[str, str]:
    """Checked before any process starts: skip (or, in CI, fail) at once without Chromium."""
    return browser_binaries()


@pytest.fixture
def browser(request, tmp_path_factory, monkeypatch, browser_installed):
    """A fresh headless Chromium (own profile, so no cookies from other tests); always quit."""
    chromium, chromedriver = browser_installed
    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_log = profile.parent / f"{profile.name}-chromedriver.log"
    service = Service(chromedriver, log_output=str(driver_log))
    driver = webdriver.Chrome(service=service, options=options)
    attach_log(request, "chromedriver.log", driver_log)
    try:
        driver.set_page_load_timeout(15)
        driver.set_script_timeout(10)
        yield driver
    finally:
        driver.quit()


def _save_artifacts(item: pytest.Item, driver) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)[-150:]
    out = artifacts_root() / safe
    shutil.rmtree(out, ignore_errors=True)  # nothing stale from an earlier run
    out.mkdir(parents=True)
    saved = []
    steps = {
        "screenshot.png": lambda p: driver.save_screenshot(str(p)),
        "page.html": lambda p: p.write_text(driver.page_source),
        "url.txt": lambda p: p.write_text(driver.current_url + "\n"),
        "console.log": lambda p: p.write_text(
            "\n".join(f"{e['level']} {e['message']}" for e in driver.get_log("browser")) + "\n"
        ),
    }
    for name, save in steps.items():
        try:
            save(out / name)
            saved.append(name)
        except Exception as exc:  # the browser may be the thing that broke
            (out / f"{name}.error").write_text(repr(exc) + "\n")
    for name, path in item.stash.get(ARTIFACTS_KEY, []):
        try:
            shutil.copyfile(path, out / name)
        except OSError:
            pass
    return out


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    driver = getattr(item, "funcargs", {}).get("browser")
    if report.failed and report.when == "call" and driver is not None:
        out = _save_artifacts(item, driver)
        report.sections.append(("browser artifacts", f"screenshot, page source, console and logs in {out}"))
    return report


# ---------------------------------------------------------------------------- app processes
class AppProcess:
    """``python -m <module> --port 0 ...`` in its own session; reaped by ``stop()``."""

    def __init__(self, module: str, *args: str, timeout: float = 10.0) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="linx-app-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--port", "0", *args],
            cwd=str(ROOT),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            start_new_session=True,
        )
        try:
            line = self._first_line(timeout)
            if not line.startswith("LISTENING "):
                raise RuntimeError(f"{module} said {line!r} instead of LISTENING <port>")
            self.port = int(line.split()[1])
        except BaseException:
            self.stop()
            raise
        self.url = f"http://127.0.0.1:{self.port}"

    def _first_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        fd, buf = self.proc.stdout.fileno(), b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"app did not listen within {timeout} s")
                if sel.select(left):
                    chunk = os.read(fd, 4096)
                    if not chunk:
                        raise RuntimeError(f"app exited with {self.proc.wait(5)} before listening")
                    buf += chunk
        return buf.split(b"\n", 1)[0].decode()

    def requests(self) -> list[dict]:
        """What an ``absolute_app`` recorded (asked directly, never through the proxy)."""
        return requests.get(self.url + "/__requests", timeout=5).json()

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()


@pytest.fixture
def apps(request) -> Iterator:
    """Start app processes with ``apps(module, *args)``; every one is stopped after the test."""
    started: list[AppProcess] = []

    def start(module: str, *args: str) -> AppProcess:
        app = AppProcess(module, *args)
        started.append(app)
        attach_log(request, f"app-{len(started)}.log", app.log.name)
        return app

    try:
        yield start
    finally:
        for app in started:
            app.stop()


# ---------------------------------------------------------------------------- host routing
class HostWorld:
    """A control plane and a proxy with ``LINX_SERVICE_DOMAIN=svc.linx.test``.

    ``APP_BASE_URL`` is ``http://linx.test:<proxy port>``, so every ``public_url`` (host- or
    path-routed) is directly what the browser opens: the resolver rules map the names to loopback.
    """

    def __init__(self, redis_url: str) -> None:
        self.prefix = f"b{secrets.token_hex(3)}:"
        self.proxy = Proxy(redis_url, self.prefix, LINX_SERVICE_DOMAIN=SERVICE_DOMAIN)
        self.base = f"http://{BASE_HOST}:{self.proxy.port}"
        self.control = ControlPlane(
            redis_url, self.prefix, LINX_SERVICE_DOMAIN=SERVICE_DOMAIN, APP_BASE_URL=self.base
        )
        try:
            self.control.wait_ready()
            self.proxy.wait_ready()
        except BaseException:
            self.stop()
            raise
        self.api = Api(self.control.url)

    def tenant_with_container(self, name: str) -> tuple[str, str]:
        """A fresh tenant and its container at 127.0.0.1: returns (api key, container id)."""
        tenant_id, key = self.api.tenant(name + secrets.token_hex(3))
        return key, self.api.container(tenant_id)["container_id"]

    def stop(self) -> None:
        self.proxy.stop()
        self.control.stop()


@pytest.fixture(scope="module")
def host_world(redis_server) -> Iterator[HostWorld]:
    world = HostWorld(redis_server.url)
    try:
        yield world
    finally:
        world.stop()
