"""Real apps as "containers" for the browser tests: each in its own cached virtualenv, never in
the project's environment.

The environments live under ``LINX_APP_CACHE`` (default ``~/.cache/linx/test-apps``), one per
app and requirement set, and are built once with pip from the package index (CI builds them on
its first run: a few minutes; later runs reuse them). An app that cannot be installed fails the
test that needs it, never skips it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

APPS = Path(__file__).resolve().parent / "apps"
STREAMLIT = ("streamlit>=1.40,<2",)


def cache_root() -> Path:
    return Path(os.environ.get("LINX_APP_CACHE") or Path.home() / ".cache" / "linx" / "test-apps")


def app_venv(name: str, requirements: tuple[str, ...]) -> Path:
    """The virtualenv's python for ``requirements``, built if it is not there yet."""
    digest = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:12]
    root = cache_root() / f"{name}-{digest}"
    python = root / "bin" / "python"
    if (root / ".complete").exists() and python.exists():
        return python
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements],
        check=True,
        timeout=1200,
    )
    (root / ".complete").write_text("\n".join(requirements) + "\n")
    return python


class StreamlitApp:
    """``streamlit run`` of an app file on a free port, optionally with a base URL path."""

    def __init__(self, python: Path, script: str, port: int, base_path: str | None = None) -> None:
        self.port = port
        self.base_path = base_path or ""
        self.log = tempfile.NamedTemporaryFile(prefix="linx-streamlit-", suffix=".log", delete=False)
        args = [
            str(python), "-m", "streamlit", "run", str(APPS / script),
            "--server.port", str(self.port), "--server.address", "127.0.0.1",
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            # the proxy is another origin than the one Streamlit would expect to check
            "--server.enableCORS", "false", "--server.enableXsrfProtection", "false",
        ]  # fmt: skip
        if base_path:
            args += ["--server.baseUrlPath", base_path]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_up(self, timeout: float = 60.0) -> StreamlitApp:
        _wait_http(self, f"http://127.0.0.1:{self.port}{self.base_path}/_stcore/health", timeout, "streamlit")
        return self

    def stop(self) -> None:
        _stop(self)


JUPYTERLAB = ("jupyterlab>=4.2,<5",)


class JupyterLab:
    """``jupyter lab`` on ``port`` with no token of its own (the Linx token guards it), optionally
    under a base URL. ``allow_remote_access``: Jupyter checks ``Host``, which is the proxy's."""

    def __init__(self, python: Path, port: int, base_url: str = "/") -> None:
        self.port = port
        self.base_url = base_url
        self.root = tempfile.mkdtemp(prefix="linx-lab-")
        self.log = tempfile.NamedTemporaryFile(prefix="linx-lab-", suffix=".log", delete=False)
        args = [
            str(python), "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            "--ServerApp.port_retries=0", "--IdentityProvider.token=", "--ServerApp.password=",
            "--ServerApp.allow_root=True",  # CI runners are often root
            "--ServerApp.disable_check_xsrf=True", "--ServerApp.allow_remote_access=True",
            f"--ServerApp.base_url={base_url}", f"--ServerApp.root_dir={self.root}",
        ]  # fmt: skip
        env = dict(os.environ, JUPYTER_CONFIG_DIR=self.root, JUPYTER_RUNTIME_DIR=self.root)
        self.proc = subprocess.Popen(
            args, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=self.root
        )

    def wait_up(self, timeout: float = 90.0) -> JupyterLab:
        _wait_http(self, f"http://127.0.0.1:{self.port}{self.base_url}api/status", timeout, "jupyter lab")
        return self

    def stop(self) -> None:
        _stop(self)
        shutil.rmtree(self.root, ignore_errors=True)


def _wait_http(app, url: str, timeout: float, what: str) -> None:
    """Poll ``url`` until it answers 200 (with a deadline); fail at once if the app exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.proc.poll() is not None:
            raise RuntimeError(f"{what} exited:\n{Path(app.log.name).read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} not up within {timeout} s:\n{Path(app.log.name).read_text()[-3000:]}")


def _stop(app) -> None:
    if app.proc.poll() is None:
        app.proc.terminate()
        try:
            app.proc.wait(15)
        except subprocess.TimeoutExpired:
            app.proc.kill()
            app.proc.wait()
    app.log.close()
