"""The deployment files in deploy/ say only what the code understands.

- compose.yaml: parsed as YAML and checked against the repository (files it mounts or builds,
  commands that exist, environment variables the code reads, health checks on real routes).
  ``docker compose config`` is not used: it needs a working Compose plugin, which a CI image
  need not have; these checks stand on their own.
- the Dockerfile: base image, non-root user, the sources ``pip install .`` needs.
- the systemd units: parsed, hardening present, stop timeouts above the drain; verified with
  ``systemd-analyze verify`` and scored with ``systemd-analyze security`` where that tool is
  installed.
- the env examples: only variables the code reads, and values the code accepts.
"""

from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import yaml

from control.config import ControlConfig
from dataplane.config import OPTIONS, ProxyConfig
from shared.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = set(PYPROJECT["project"]["scripts"])
OPENAPI_PATH = "/api/openapi.json"  # the control plane's route that needs neither auth nor Redis


# -------------------------------------------------------------------------- known variables
class Recorder(Mapping[str, str]):
    """A mapping that remembers every name looked up in it."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self.values = dict(values or {})
        self.seen: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.seen.add(name)
        return self.values[name]

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self.seen.add(name)
        return name in self.values

    def get(self, name: str, default=None):
        self.seen.add(name)
        return self.values.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def control_variables(monkeypatch) -> set[str]:
    """Every variable the control plane reads: its config object's and gunicorn.conf.py's."""
    app = Recorder({"LINX_ADMIN_TOKEN": "x"})
    ControlConfig.from_env(app)
    conf = Recorder()
    monkeypatch.setattr(os, "environ", conf)
    runpy.run_path(str(DEPLOY / "gunicorn.conf.py"))
    monkeypatch.undo()
    assert "LINX_ADMIN_TOKEN" in app.seen and "LINX_CONTROL_LISTEN" in conf.seen
    return app.seen | conf.seen


PROXY_VARIABLES = {option.env for option in OPTIONS}


# ------------------------------------------------------------------------------ env examples
_ASSIGNMENT = re.compile(r"^(#?)([A-Z][A-Z0-9_]*)=(.*)$")


def env_example(name: str) -> tuple[dict[str, str], dict[str, str]]:
    """(active assignments, commented-out example assignments) of deploy/<name>."""
    active: dict[str, str] = {}
    examples: dict[str, str] = {}
    for line in (DEPLOY / name).read_text().splitlines():
        found = _ASSIGNMENT.match(line)
        if found:
            (examples if found.group(1) else active)[found.group(2)] = found.group(3)
    return active, examples


# Variables that only make sense together with another one.
_COMPANIONS = {
    "LINX_REDIS_SENTINELS": ("LINX_REDIS_SENTINEL_MASTER",),
    "LINX_REDIS_SENTINEL_MASTER": ("LINX_REDIS_SENTINELS",),
    "LINX_PROXY_TLS_LISTEN": ("LINX_TLS_CERT", "LINX_TLS_KEY"),
}


def _with_each_example(active: dict[str, str], examples: dict[str, str]) -> Iterator[dict[str, str]]:
    for name, value in examples.items():
        env = {**active, name: value}
        for other in _COMPANIONS.get(name, ()):
            env[other] = examples[other]
        if name == "LINX_REDIS_CLUSTER":
            env["LINX_KEY_PREFIX"] = "{linx}:"  # Cluster mode requires a hash tag
        yield env


def test_control_env_example(monkeypatch):
    known = control_variables(monkeypatch)
    active, examples = env_example("linx-control.env.example")
    assert set(active) | set(examples) <= known, (set(active) | set(examples)) - known
    assert {"LINX_ADMIN_TOKEN", "REDIS_URL", "APP_BASE_URL"} <= set(active)
    # Unedited, it fails closed: no admin token, no start.
    with pytest.raises(ConfigError) as err:
        ControlConfig.from_env(active)
    assert err.value.variable == "LINX_ADMIN_TOKEN"
    filled = {**active, "LINX_ADMIN_TOKEN": "a-real-token"}
    ControlConfig.from_env(filled)
    for env in _with_each_example(filled, examples):
        ControlConfig.from_env(env)  # every example value is one the code accepts


def test_proxy_env_example():
    active, examples = env_example("linx-proxy.env.example")
    names = set(active) | set(examples)
    assert names <= PROXY_VARIABLES, names - PROXY_VARIABLES
    assert {"REDIS_URL", "LINX_PROXY_LISTEN", "LINX_PROXY_ADMIN_LISTEN", "LINX_DRAIN_SECS"} <= set(active)
    ProxyConfig.from_env(active)
    for env in _with_each_example(active, examples):
        ProxyConfig.from_env(env)


# ------------------------------------------------------------------------------ systemd units
def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """systemd's INI dialect: sections, repeatable keys, '#'/';' comments, '\\' continuations."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, eq, value = line.partition("=")
        assert eq and current is not None and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key.strip()), (
            f"{path.name}:{number}: not a key=value line in a section: {raw!r}"
        )
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def last(unit: dict, section: str, key: str) -> str | None:
    values = unit.get(section, {}).get(key)
    return values[-1] if values else None


def seconds(value: str) -> float:
    """systemd time spans as used here: 45, 45s, 2min, 1min 30s."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert parts and "".join(n + u for n, u in parts) == value.replace(" ", ""), value
    return sum(float(n) * units[u] for n, u in parts)


UNITS = ["linx-control.service", "linx-proxy.service", "linx-proxy@.service"]
HARDENING = {
    "DynamicUser": "yes",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "Restart": "on-failure",
    "KillSignal": "SIGTERM",
}


@pytest.mark.parametrize("name", UNITS)
def test_unit_is_hardened_and_complete(name):
    unit = parse_unit(DEPLOY / name)
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    for key, value in HARDENING.items():
        assert last(unit, "Service", key) == value, key
    assert last(unit, "Install", "WantedBy") == "multi-user.target"
    assert last(unit, "Service", "RestrictAddressFamilies").split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert service["SystemCallFilter"][0] == "@system-service"

    # No capabilities by default; the only one ever offered (in comments) is for ports < 1024.
    assert last(unit, "Service", "CapabilityBoundingSet") == ""
    assert last(unit, "Service", "AmbientCapabilities") in (None, "")
    for line in (DEPLOY / name).read_text().splitlines():
        if "Capabilit" in line and line.startswith("#") and "=" in line:
            assert line.split("=", 1)[1].strip() == "CAP_NET_BIND_SERVICE", line

    env_files = service["EnvironmentFile"]
    assert env_files[0] in ("/etc/linx/linx-control.env", "/etc/linx/linx-proxy.env")
    assert all(f.startswith("/etc/linx/") and f.endswith(".env") for f in env_files)
    example = DEPLOY / (Path(env_files[0]).name + ".example")
    assert example.exists()

    exec_start = last(unit, "Service", "ExecStart").split()
    binary = Path(exec_start[0]).name
    stop_timeout = seconds(last(unit, "Service", "TimeoutStopSec"))
    if binary == "gunicorn":
        # gunicorn -c <checkout>/deploy/gunicorn.conf.py: the file exists, and systemd waits
        # longer than gunicorn lets workers finish.
        conf_arg = exec_start[exec_start.index("-c") + 1]
        assert conf_arg.endswith("/deploy/gunicorn.conf.py") and (DEPLOY / "gunicorn.conf.py").exists()
        graceful = runpy.run_path(str(DEPLOY / "gunicorn.conf.py"))["graceful_timeout"]
        assert stop_timeout > graceful
        assert last(unit, "Service", "Type") == "notify"  # gunicorn calls sd_notify(READY=1)
    else:
        assert binary in SCRIPTS, f"{binary} is not a console script of pyproject.toml"
        active, _ = env_example("linx-proxy.env.example")
        assert stop_timeout > float(active.get("LINX_DRAIN_SECS", ProxyConfig.drain_secs))


def test_template_reads_its_instance_file():
    unit = parse_unit(DEPLOY / "linx-proxy@.service")
    assert unit["Service"]["EnvironmentFile"] == ["/etc/linx/linx-proxy.env", "/etc/linx/linx-proxy-%i.env"]


def _fake_install(tmp_path: Path) -> tuple[Path, Path]:
    """Copies of the units whose /opt/linx/venv/bin/ programs exist (as empty scripts), so the
    checks are about the units, not about this machine's /opt."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("gunicorn", *SCRIPTS):
        (bin_dir / program).write_text("#!/bin/sh\n")
        (bin_dir / program).chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for name in UNITS:
        text = (DEPLOY / name).read_text().replace("/opt/linx/venv/bin/", f"{bin_dir}/")
        (units / name.replace("@.", "@a.")).write_text(text)
    return bin_dir, units


def test_systemd_analyze_where_installed(tmp_path):
    tool = shutil.which("systemd-analyze")
    units = sorted(_fake_install(tmp_path)[1].iterdir())
    assert [u.name for u in units] == ["linx-control.service", "linx-proxy.service", "linx-proxy@a.service"]
    if tool is None:
        return  # the parse above (test_unit_is_hardened_and_complete) is the check then
    for unit in units:
        verify = subprocess.run(
            [tool, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
        )
        assert verify.returncode == 0 and not (verify.stdout + verify.stderr).strip(), (
            unit.name,
            verify.stdout + verify.stderr,
        )
        security = subprocess.run(
            [tool, "security", "--offline=yes", "--no-pager", str(unit)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if "--offline" in security.stderr:  # systemd older than 250
            continue
        score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
        assert score, security.stdout + security.stderr
        assert float(score.group(1)) <= 2.0, (unit.name, score.group(0))


# ------------------------------------------------------------------------------- Dockerfile
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    lines = [
        line
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if not line.lstrip().startswith("#") and line.strip()
    ]
    joined: list[str] = []
    pending = ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    assert not pending
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in joined]


def test_dockerfile():
    steps = dockerfile_instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    workdir = dict(steps)["WORKDIR"]
    copied: dict[str, str] = {}
    for kind, args in steps:
        if kind == "COPY":
            *sources, dest = args.split()
            for source in sources:
                assert (ROOT / source).exists(), source  # relative to the build context (root)
                copied[source] = dest
    assert any(kind == "RUN" and re.search(r"\bpip install \.(\s|$)", args) for kind, args in steps)
    # pip install . needs pyproject.toml, its readme and every package it lists.
    assert {"pyproject.toml", PYPROJECT["project"]["readme"]} <= {
        s for s in copied if copied[s] in ("./", ".", workdir)
    }
    for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied, pattern

    users = [args for kind, args in steps if kind == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    cmd = dict(steps)["CMD"]
    assert cmd == '["gunicorn", "-c", "/app/deploy/gunicorn.conf.py"]'
    assert workdir == "/app" and copied["deploy"] == "./deploy"


def test_dockerignore_keeps_what_the_build_copies():
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {src for kind, args in dockerfile_instructions() if kind == "COPY" for src in args.split()[:-1]}
    assert copied <= kept, copied - kept


# ------------------------------------------------------------------------------- compose
def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} / ${VAR:?error}: the default, or a stand-in for a required one."""

    def one(found: re.Match) -> str:
        name, op, arg = found.group(1), found.group(2), found.group(3)
        assert op in (":-", ":?"), f"${{{name}}} has neither a default nor an error message"
        return arg if op == ":-" else f"test-{name.lower()}"

    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(:[-?])?([^}]*)\}", one, value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment as a mapping"
    return {k: _interpolate(str(v)) for k, v in env.items()}


def _healthcheck_url(service: dict) -> str:
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD"
    found = re.search(r"http://[^'\" ]+", " ".join(test))
    assert found, test
    return found.group(0)


def _port_of(hostport: str) -> int:
    return int(hostport.rsplit(":", 1)[1])


def test_compose_services(compose):
    services = compose["services"]
    assert set(services) == {"redis", "control", "proxy-a", "proxy-b"}
    for name, service in services.items():
        if name != "redis":
            build = service["build"]
            context = (DEPLOY / build["context"]).resolve()
            assert context == ROOT and (context / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
            assert service["depends_on"]["redis"]["condition"] == "service_healthy"
            assert service["cap_drop"] == ["ALL"] and service["read_only"] is True
        assert "healthcheck" in service, name


def test_compose_redis_is_durable(compose):
    redis_service = compose["services"]["redis"]
    mounts = dict(v.split(":")[:2] for v in redis_service["volumes"])  # source -> target
    command = redis_service["command"]
    conf_in_container = command[1]
    host_conf = next(src for src, dst in mounts.items() if dst == conf_in_container)
    assert (DEPLOY / host_conf).resolve() == DEPLOY / "redis.conf"
    conf = (DEPLOY / "redis.conf").read_text()
    assert re.search(r"^appendonly yes$", conf, re.M) and re.search(r"^appendfsync everysec$", conf, re.M)
    assert "--appendonly" not in command  # the file's AOF setting is not overridden
    data_dir = command[command.index("--dir") + 1]
    volume = next(src for src, dst in mounts.items() if dst == data_dir)
    assert volume in compose["volumes"], "the data directory is a named volume"


def test_compose_proxies(compose):
    for name in ("proxy-a", "proxy-b"):
        proxy = compose["services"][name]
        assert proxy["command"][0] in SCRIPTS
        env = _environment(proxy)
        assert set(env) <= PROXY_VARIABLES, set(env) - PROXY_VARIABLES
        config = ProxyConfig.from_env(env)
        assert config.redis.url.startswith("redis://redis:")
        url = _healthcheck_url(proxy)
        assert url == f"http://127.0.0.1:{config.admin_listen[1]}/readyz"
        published = [p.rsplit(":", 1) for p in proxy["ports"]]
        assert [int(container) for _, container in published] == [config.listen[1]]
        assert seconds(proxy["stop_grace_period"]) > config.drain_secs
    host_ports = [compose["services"][n]["ports"][0].split(":")[0] for n in ("proxy-a", "proxy-b")]
    assert len(set(host_ports)) == 2, "two replicas, two host ports"


def test_compose_control_plane(compose, monkeypatch):
    control = compose["services"]["control"]
    env = _environment(control)
    known = control_variables(monkeypatch)
    assert set(env) <= known, set(env) - known
    config = ControlConfig.from_env(env)
    assert config.redis.url.startswith("redis://redis:")
    command = control["command"]
    assert command[:2] == ["gunicorn", "-c"] and command[2] == "/app/deploy/gunicorn.conf.py"
    listen = env["LINX_CONTROL_LISTEN"]
    assert _healthcheck_url(control) == f"http://127.0.0.1:{_port_of(listen)}{OPENAPI_PATH}"
    assert control["ports"][0].endswith(f":{_port_of(listen)}")
    assert "${LINX_ADMIN_TOKEN:?" in (DEPLOY / "compose.yaml").read_text()  # no default token


def test_openapi_route_answers_without_credentials_or_redis(monkeypatch):
    """The control plane's health check route (compose) needs neither."""
    from control import create_app

    app = create_app(ControlConfig(admin_token="x", background_sweep=False), redis_client=object())
    assert app.test_client().get(OPENAPI_PATH).status_code == 200
