"""The proxy's options: declared once (name, help, default) for parsing and --help."""

from __future__ import annotations

import subprocess
import sys

from dataplane.config import OPTIONS, ProxyConfig


def test_proxy_help_shows_every_option_with_its_default():
    out = subprocess.run(
        [sys.executable, "-m", "dataplane", "--help"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0
    for opt in OPTIONS:
        flag = "--" + opt.env.lower().replace("_", "-")
        assert flag in out.stdout
        if opt.default is not None:
            assert f"(default: {opt.default})" in out.stdout
    parsed = ProxyConfig.from_env({})
    assert parsed.idle_timeout == float(next(o.default for o in OPTIONS if o.env == "LINX_IDLE_TIMEOUT_SECS"))
    assert parsed.listen == ("0.0.0.0", 8080)
