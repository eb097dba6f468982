"""Real apps through Linx in Chromium (issue 13), each from its own cached virtualenv
(real_apps.py), with no failed load in the browser's log:

* Streamlit on a path route with the prefix stripped, with ``strip_prefix: false`` and its
  ``baseUrlPath``, and on a host route: the page renders, a click comes back over its WebSocket;
* JupyterLab with its ``base_url`` on a path route (``strip_prefix: false``) and on a host
  route: the shell renders, ``print(6*7)`` run from the page comes back over the kernel
  WebSocket; with the prefix stripped, its first redirect stays under the prefix.
"""

from __future__ import annotations

import pytest
import requests
from selenium.webdriver.common.by import By

from deploy.redis_process import free_port
from tests.browser.real_apps import JUPYTERLAB, STREAMLIT, JupyterLab, StreamlitApp, app_venv
from tests.browser.test_browser import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def streamlit_python():
    return app_venv("streamlit", STREAMLIT)


def _failed_loads(browser) -> list[str]:
    return [e["message"] for e in browser.get_log("browser") if "Failed to load resource" in e["message"]]


@pytest.mark.parametrize(
    "routing,strip_prefix",
    [("path", True), ("path", False), ("host", True)],
    ids=["path-stripped", "path-keep-prefix", "host"],
)
def test_streamlit_renders_and_clicks_round_trip(
    host_world, browser, streamlit_python, routing, strip_prefix
):
    key, ctr = host_world.tenant_with_container("st")
    port = free_port()  # published first: with a base URL the app must know its service id
    svc = host_world.api.publish(
        key, ctr, port, name="st", enable_websockets=True, routing=routing, strip_prefix=strip_prefix
    )
    base = None if strip_prefix else f"/linx/{svc['service_id']}"
    app = StreamlitApp(streamlit_python, "streamlit_counter.py", port, base)
    try:
        app.wait_up()
        browser.get(svc["public_url"])
        wait_until(browser, "the Streamlit page", lambda d: "Linx counter" in d.page_source, timeout=30)
        button = wait_until(
            browser,
            "the button",
            lambda d: next((b for b in d.find_elements(By.TAG_NAME, "button") if "Add one" in b.text), None),
            timeout=30,
        )
        assert "linx_token" not in browser.current_url  # exchanged for the cookie
        button.click()
        wait_until(browser, "the click's answer", lambda d: "count: 1" in d.page_source, timeout=20)
        assert _failed_loads(browser) == []
    finally:
        app.stop()


# ------------------------------------------------------------------------------- JupyterLab
@pytest.fixture(scope="module")
def lab_python():
    return app_venv("jupyterlab", JUPYTERLAB)


# From the page: start a kernel through the proxy, run print(6*7) over the kernel WebSocket.
RUN_IN_KERNEL = """
const [base, done] = [arguments[0], arguments[arguments.length - 1]];
(async () => {
  const r = await fetch(base + "api/kernels", {method: "POST", headers: {"Content-Type": "application/json"},
                                                body: JSON.stringify({name: "python3"})});
  if (!r.ok) return done("kernel start: HTTP " + r.status);
  const kernel = await r.json();
  const wsBase = location.origin.replace(/^http/, "ws") + base;
  const ws = new WebSocket(wsBase + "api/kernels/" + kernel.id + "/channels");
  const msgId = "m" + Math.random().toString(16).slice(2);
  ws.onerror = () => done("websocket error");
  ws.onclose = (e) => done("websocket closed " + e.code);
  ws.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    const mine = msg.parent_header && msg.parent_header.msg_id === msgId;
    if (mine && msg.msg_type === "stream") done(msg.content.text);
  };
  ws.onopen = () => ws.send(JSON.stringify({
    header: {msg_id: msgId, username: "", session: "s" + msgId, msg_type: "execute_request", version: "5.3",
             date: new Date().toISOString()},
    parent_header: {}, metadata: {}, channel: "shell", buffers: [],
    content: {code: "print(6*7)", silent: false, store_history: false, user_expressions: {},
              allow_stdin: false, stop_on_error: true}}));
})().catch((e) => done("error: " + e));
"""


@pytest.mark.parametrize("routing", ["path", "host"], ids=["path-keep-prefix", "host"])
def test_jupyterlab_shell_renders_and_runs_code_over_the_kernel_websocket(
    host_world, browser, lab_python, routing
):
    key, ctr = host_world.tenant_with_container("lab")
    port = free_port()
    svc = host_world.api.publish(
        key, ctr, port, name="lab", enable_websockets=True, routing=routing, strip_prefix=routing == "host"
    )
    base = f"/linx/{svc['service_id']}/" if routing == "path" else "/"
    lab = JupyterLab(lab_python, port, base)
    try:
        lab.wait_up()
        browser.set_script_timeout(60)
        browser.get(svc["public_url"])
        wait_until(
            browser,
            "the Lab shell",
            lambda d: d.find_elements(By.CSS_SELECTOR, "#jp-main-dock-panel"),
            timeout=60,
        )
        assert browser.current_url.split("?")[0].endswith(base + "lab")
        assert browser.execute_async_script(RUN_IN_KERNEL, base).strip() == "42"
        assert _failed_loads(browser) == []
    finally:
        lab.stop()


def test_jupyterlab_with_the_prefix_stripped_keeps_its_first_redirect_under_the_prefix(
    host_world, lab_python
):
    """Lab at the root answers ``/`` with ``Location: /lab?``; the proxy keeps it under the
    prefix. (Its pages then load ``/static/...`` from the origin's root: such apps need a base
    URL or host routing, as the README says.)"""
    key, ctr = host_world.tenant_with_container("lab")
    port = free_port()
    svc = host_world.api.publish(key, ctr, port, name="lab", enable_websockets=True)
    lab = JupyterLab(lab_python, port, "/")
    try:
        lab.wait_up()
        token = svc["public_url"].split("linx_token=", 1)[1]
        url = f"http://127.0.0.1:{host_world.proxy.port}/linx/{svc['service_id']}/"
        resp = requests.get(url, headers={"X-Linx-Token": token}, allow_redirects=False, timeout=10)
        assert resp.status_code in (301, 302, 303, 307, 308)
        assert resp.headers["Location"].startswith(f"/linx/{svc['service_id']}/lab")
    finally:
        lab.stop()
