"""Schemathesis against a real `jq serve`, with each key type (issue 15): every operation of
/openapi.json fuzzed (examples, coverage, fuzzing and stateful phases) with every check on —
no 5xx, answers that match their published schemas and status codes, schema-valid requests
accepted and schema-invalid ones refused, `Allow` on a 405. Bounded to about two minutes in
all (SCHEMATHESIS_MAX_EXAMPLES and SCHEMATHESIS_MAX_TIME raise it for a longer hunt).

What the run is told (tests/server/schemathesis.toml) and why: a 422 may answer schema-valid
data (a reused idempotency key is the queue's state, not the request's shape); a batch answers
201 with a refusal per invalid entry, by design. Long polls are shortened to 100 ms by
tests/server/schemathesis_hooks.py so the budget goes to requests, not to waiting.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
MAX_EXAMPLES = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "5")
MAX_TIME = os.environ.get("SCHEMATHESIS_MAX_TIME", "35")  # seconds per key type

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzzed(jq_module_server_factory: Any) -> Any:
    if shutil.which("schemathesis", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("schemathesis is a dev dependency: pip install -e '.[dev]'")
    return jq_module_server_factory("--max-payload", "64KiB", "--lease-check-interval", "200ms")


@pytest.mark.parametrize("key_type", ["client", "worker", "admin"])
def test_schemathesis_finds_nothing(fuzzed: Any, key_type: str, tmp_path: Path) -> None:
    key = getattr(fuzzed, f"{key_type}_key")
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{fuzzed.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {key}",
        "--max-examples",
        MAX_EXAMPLES,
        "--max-time",
        MAX_TIME,
        # One worker: hypothesis parses lambdas' source with ast.parse, and CPython 3.11's
        # parser is not thread-safe ("AST constructor recursion depth mismatch").
        "--workers",
        "1",
        "--seed",
        {"client": "1501", "worker": "1502", "admin": "1503"}[key_type],
        "--request-timeout",
        "30",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HERE / "schemathesis_hooks.py")}
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-20_000:]
    assert " 5xx" not in output.split("SUMMARY", 1)[-1]
    assert "Traceback" not in fuzzed.log()
