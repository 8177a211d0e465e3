"""Checks of docker-compose.yml that run without a Docker engine.

The file is parsed with PyYAML and checked for the shape the quick start and the crash demo
rely on (a `queue` built from this repo with its WAL on the named volume `wal-data`, a healthy
`redis` named `job-queue-redis`), its environment is fed through the server's own
`build_settings` so every variable is one the server reads with a value it accepts, and
`docker compose config` / `docker-compose config` validates it when a client is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from jq_tool.settings import ENV_VARS, build_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def queue(compose: dict[str, Any]) -> dict[str, Any]:
    service: dict[str, Any] = compose["services"]["queue"]
    return service


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the KEY=value list form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_services_and_names(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"queue", "redis"}
    redis = compose["services"]["redis"]
    assert redis["container_name"] == "job-queue-redis"
    assert redis["image"].startswith("redis:7")


def test_queue_is_built_from_this_repo_and_published_on_8080(queue: dict[str, Any]) -> None:
    build = queue["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    assert (COMPOSE.parent / context / "Dockerfile").is_file()
    assert "8080:8080" in [str(p) for p in queue["ports"]]


def test_queue_environment_is_what_the_server_reads(queue: dict[str, Any]) -> None:
    env = environment(queue)
    assert set(env) >= {"PORT", "WAL_DIR", "LEASE_DURATION", "LEASE_CHECK_INTERVAL", "REDIS_URL"}
    unknown = set(env) - set(ENV_VARS.values())
    assert not unknown, f"the server reads no such variables: {unknown}"
    settings = build_settings({}, env=env)  # raises SettingsError on a value it rejects
    assert settings.port == 8080
    assert str(settings.data_dir) == "/data"
    assert settings.lease_ms == 30_000
    assert settings.lease_check_interval_ms == 5_000
    assert settings.redis_url == "redis://redis:6379/0"


def test_wal_lives_on_the_named_volume(compose: dict[str, Any], queue: dict[str, Any]) -> None:
    assert "wal-data" in compose["volumes"]
    mounts = {str(v).split(":")[0]: str(v).split(":")[1] for v in queue["volumes"]}
    assert mounts["wal-data"] == environment(queue)["WAL_DIR"] == "/data"


def test_queue_waits_for_a_healthy_redis(compose: dict[str, Any], queue: dict[str, Any]) -> None:
    assert queue["depends_on"]["redis"]["condition"] == "service_healthy"
    test = compose["services"]["redis"]["healthcheck"]["test"]
    assert "redis-cli" in test and "ping" in test
    # The queue reaches Redis by its service name on the compose network.
    assert environment(queue)["REDIS_URL"].startswith("redis://redis:")


def compose_client() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_client_accepts_the_file() -> None:
    client = compose_client()
    if client is None:
        pytest.skip("no docker compose / docker-compose client installed")
    run = subprocess.run(
        [*client, "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
