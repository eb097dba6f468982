"""The console (SPEC section 7, issue 15) in headless Chromium against real processes.

Tenant: sign in with an API key, publish a port of a running backend, watch the status turn
``ready`` without a reload, open the URL, rotate (the old URL refused), create and revoke a
share link, delete, sign out. Operator: register a container, see the proxy replicas. And a
page served through the proxy cannot read or drive the console.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.test_browser import FETCH, wait_served, wait_until
from tests.helpers.procs import ADMIN_TOKEN

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SCREENSHOTS = os.environ.get("LINX_CONSOLE_SCREENSHOTS")  # a directory: save each view there


def _shot(browser, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(SCREENSHOTS) / f"{name}.png"))


def _sign_in(browser, control_url: str, credential: str) -> None:
    browser.get(control_url + "/console/")
    browser.find_element(By.ID, "key").send_keys(credential)
    _click(browser, "sign-in")
    wait_until(browser, "the console", lambda d: d.find_elements(By.ID, "sign-out"))


def _click(browser, element_id: str) -> None:
    """Click once the element is there; rows are re-rendered after each action, so an element
    found a moment earlier may have been replaced (stale): find it again."""

    def clicked(d):
        try:
            d.find_element(By.ID, element_id).click()
            return True
        except (StaleElementReferenceException, NoSuchElementException):
            return False

    wait_until(browser, f"#{element_id} to click", clicked)


def _accept(browser) -> None:
    WebDriverWait(browser, 5).until(ec.alert_is_present()).accept()


def _proxy_url(stack, public_url: str) -> str:
    parts = urlsplit(public_url)
    return f"{stack.proxy.url}{parts.path}?{parts.query}"


def test_tenant_publishes_watches_status_rotates_shares_and_deletes(stack, browser):
    tenant_id, key = stack.api.tenant("console" + secrets.token_hex(3))
    ctr = stack.api.container(tenant_id, name="box")
    cid = ctr["container_id"]
    _sign_in(browser, stack.control.url, key)
    cookie = {c["name"]: c for c in browser.get_cookies()}["linx_console"]
    assert cookie["path"] == "/console/" and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert key not in str(browser.get_cookies())

    wait_until(browser, "the publish form", lambda d: d.find_elements(By.ID, f"publish-{cid}-name"))
    browser.find_element(By.ID, f"publish-{cid}-target_port").send_keys("0")
    browser.find_element(By.ID, f"publish-{cid}-name").send_keys("web")
    _click(browser, f"publish-{cid}-submit")
    error = wait_until(
        browser,
        "the API's message next to the port field",
        lambda d: d.find_element(By.CSS_SELECTOR, f'#publish-{cid} [data-for="target_port"]').text,
    )
    assert "target_port" in error
    port = browser.find_element(By.ID, f"publish-{cid}-target_port")
    port.clear()
    port.send_keys(str(stack.backend.port))
    _click(browser, f"publish-{cid}-submit")
    row = wait_until(
        browser, "the new service", lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-service]")
    )
    sid = row[0].get_attribute("data-service")
    svc = stack.api.call("GET", f"/api/services/{sid}", key, expect=200).json()
    assert "linx_token=…" in browser.find_element(By.CSS_SELECTOR, f'[data-url="{sid}"]').text  # hidden

    # the status follows reality without a reload
    wait_until(
        browser,
        "status ready",
        lambda d: d.find_element(By.CSS_SELECTOR, f'[data-status="{sid}"]').text == "ready",
        timeout=20,
    )
    _shot(browser, "console-tenant")
    old = _proxy_url(stack, svc["public_url"])
    wait_served(stack.proxy.port, svc)
    assert requests.get(old, timeout=5).status_code == 200

    _click(browser, f"rotate-{sid}")
    _accept(browser)
    wait_until(
        browser,
        "the rotated URL",
        lambda d: (
            stack.api.call("GET", f"/api/services/{sid}", key).json()["public_url"] != svc["public_url"]
        ),
    )
    wait_until(browser, "the old URL refused", lambda d: requests.get(old, timeout=5).status_code == 403)

    _click(browser, f"cors-{sid}")
    _accept(browser)
    wait_until(
        browser,
        "CORS passthrough",
        lambda d: (
            stack.api.call("GET", f"/api/services/{sid}", key).json()["cors_preflight"] == "passthrough"
        ),
    )

    _click(browser, f"links-btn-{sid}")
    wait_until(browser, "the share-link form", lambda d: d.find_elements(By.ID, f"link-{sid}-label"))
    browser.find_element(By.ID, f"link-{sid}-label").send_keys("demo")
    _click(browser, f"link-{sid}-submit")
    link_url = wait_until(
        browser, "the link shown once", lambda d: d.find_element(By.ID, f"link-url-{sid}").text
    )
    wait_until(browser, "the link served", lambda d: requests.get(_proxy_url(stack, link_url), timeout=5).ok)
    browser.find_element(By.CSS_SELECTOR, f"#links-{sid} tr[data-link] button").click()
    _accept(browser)
    wait_until(
        browser,
        "the link refused",
        lambda d: requests.get(_proxy_url(stack, link_url), timeout=5).status_code == 403,
    )

    _click(browser, f"delete-{sid}")
    _accept(browser)
    wait_until(
        browser, "the row gone", lambda d: not d.find_elements(By.CSS_SELECTOR, f'tr[data-service="{sid}"]')
    )
    stack.api.call("GET", f"/api/services/{sid}", key, expect=404)

    _click(browser, "sign-out")
    wait_until(browser, "the sign-in page", lambda d: d.find_elements(By.ID, "key"))
    assert "linx_console" not in {c["name"] for c in browser.get_cookies()}


def test_operator_registers_a_container_and_sees_the_proxies(stack, browser):
    tenant_id, _ = stack.api.tenant("op" + secrets.token_hex(3))
    _sign_in(browser, stack.control.url, ADMIN_TOKEN)
    wait_until(browser, "the register form", lambda d: d.find_elements(By.ID, "container-register-tenant_id"))
    browser.find_element(By.ID, "container-register-tenant_id").send_keys(tenant_id)
    browser.find_element(By.ID, "container-register-address").send_keys("127.0.0.1")
    name = "reg" + secrets.token_hex(3)
    browser.find_element(By.ID, "container-register-name").send_keys(name)
    _click(browser, "container-register-submit")
    wait_until(browser, "the container listed", lambda d: name in d.find_element(By.ID, "containers").text)
    listed = stack.api.call("GET", "/api/admin/containers", expect=200).json()["containers"]
    assert any(c["name"] == name and c["tenant_id"] == tenant_id for c in listed)
    wait_until(
        browser, "a proxy replica", lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-proxy]"), timeout=15
    )
    _shot(browser, "console-operator")


def test_a_page_served_through_the_proxy_cannot_read_or_drive_the_console(stack, browser, apps):
    tenant_id, key = stack.api.tenant("xo" + secrets.token_hex(3))
    ctr = stack.api.container(tenant_id)
    # the victim is signed in to the console in this browser
    _sign_in(browser, stack.control.url, key)
    demo = apps("deploy.demo_app")
    svc = stack.api.publish(key, ctr["container_id"], demo.port, name="page", auth_mode="public")
    page = f"{stack.proxy.url}{urlsplit(svc['public_url']).path}"
    wait_until(browser, "the page served", lambda d: requests.get(page, timeout=5).status_code == 200)
    browser.get(page)
    wait_until(browser, "the service's page", lambda d: d.title == "Linx demo")
    base = stack.control.url + "/console/api/containers"
    read = browser.execute_async_script(FETCH, base, {"credentials": "include"})
    assert read["ok"] is False  # no CORS grant: the page cannot read the answer
    browser.execute_async_script(
        FETCH,
        f"{base}/{ctr['container_id']}/services",
        {
            "method": "POST",
            "mode": "no-cors",
            "credentials": "include",
            "headers": {"Content-Type": "text/plain"},
            "body": '{"name": "pwned", "target_port": 80}',
        },
    )
    services = stack.api.call("GET", f"/api/containers/{ctr['container_id']}/services", key).json()[
        "services"
    ]
    assert [s["name"] for s in services] == ["page"]  # nothing was created
