"""jq_tool/deferred_imports.py: a deferred module runs on its first use, once, from any thread,
and is then the module itself; until then `import` statements do not run it. Each test uses
modules of its own (written to tmp_path) so that nothing else in the process is deferred."""

from __future__ import annotations

import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from jq_tool.deferred_imports import defer


@pytest.fixture
def package(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A package of one's own on sys.path, with a module that counts its runs."""
    name = f"deferred_probe_{request.node.name.replace('[', '_').replace(']', '_')}"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("RUNS = []\n")
    (root / "counted.py").write_text(
        "import time\n"
        f"from {name} import RUNS\n"
        "RUNS.append(1)\n"
        "time.sleep(0.05)  # a slow module: other threads ask while it runs\n"
        "FIRST = 'first'\n"
        "def twice(x):\n"
        "    return 2 * x\n"
    )
    (root / "broken.py").write_text("raise RuntimeError('broken at import')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield name
    finally:
        sys.path.remove(str(tmp_path))
        for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[module]


def test_import_statements_do_not_run_it_a_name_does_once(package: str) -> None:
    defer(f"{package}.counted")
    parent = sys.modules[package]
    counted = sys.modules[f"{package}.counted"]
    assert parent.RUNS == [] and parent.counted is counted
    namespace: dict[str, object] = {}
    exec(f"import {package}.counted\nfrom {package} import counted", namespace)
    assert namespace["counted"] is counted and parent.RUNS == []  # still not run
    assert counted.twice(21) == 42  # a name: it runs now
    assert parent.RUNS == [1] and type(counted) is types.ModuleType
    assert counted.FIRST == "first" and parent.RUNS == [1]  # once
    with pytest.raises(AttributeError):
        _ = counted.no_such_name


def test_threads_asking_at_once_all_get_the_whole_module(package: str) -> None:
    defer(f"{package}.counted")
    counted = sys.modules[f"{package}.counted"]
    seen: list[object] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def ask() -> None:
        start.wait()
        try:
            seen.append(counted.twice)  # most arrive while the first one runs it (50 ms)
            seen.append(counted.FIRST)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sys.modules[package].RUNS == [1]
    assert seen.count("first") == 8 and seen.count(counted.twice) == 8


def test_a_module_that_fails_raises_like_an_import_and_leaves_sys_modules(package: str) -> None:
    defer(f"{package}.broken")
    broken = sys.modules[f"{package}.broken"]
    with pytest.raises(RuntimeError, match="broken at import"):
        _ = broken.anything
    assert f"{package}.broken" not in sys.modules


def test_an_imported_or_unknown_module_is_left_alone(package: str) -> None:
    import json

    defer("json")
    assert sys.modules["json"] is json and type(json) is types.ModuleType
    defer(f"{package}.no_such_module")
    assert f"{package}.no_such_module" not in sys.modules


def test_jq_serve_s_deferred_modules_work_when_used() -> None:
    # A fresh interpreter: the standard-library modules jq serve defers, each used by name
    # after an import statement, as their importers do.
    code = (
        "from jq_tool.deferred_imports import DEFERRED, defer_unused_imports\n"
        "defer_unused_imports()\n"
        "import sys, types\n"
        "assert all(type(sys.modules[n]).__name__ == '_Deferred' for n in DEFERRED)\n"
        "import http.client, http.cookies, logging.config, html, bz2, lzma, shutil, hashlib\n"
        "import anyio.abc, anyio.to_thread, calendar\n"
        "import email.errors, email.base64mime, email.quoprimime\n"
        "assert http.client.responses[404] == 'Not Found'\n"
        "assert http.cookies.SimpleCookie('a=b')['a'].value == 'b'\n"
        "assert callable(logging.config.dictConfig)\n"
        "assert html.escape('<') == '&lt;'\n"
        "assert bz2.decompress(bz2.compress(b'x')) == b'x'\n"
        "assert lzma.decompress(lzma.compress(b'x')) == b'x'\n"
        "assert 'bztar' in dict(shutil.get_archive_formats())\n"
        "assert hashlib.sha256(b'').hexdigest().startswith('e3b0c442')\n"
        "assert anyio.run(anyio.to_thread.run_sync, lambda: 7) == 7\n"
        "assert anyio.abc.TaskGroup.__name__ == 'TaskGroup'\n"
        "assert calendar.timegm((1970, 1, 2, 0, 0, 0)) == 86400\n"
        "assert email.base64mime.body_encode(b'a') == 'YQ==\\n'\n"
        "assert email.quoprimime.header_encode(b'a') == '=?iso-8859-1?q?a?='\n"
        "assert issubclass(email.errors.HeaderParseError, email.errors.MessageError)\n"
        "assert all(type(sys.modules[n]) is types.ModuleType for n in DEFERRED)\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "ok", run.stderr[-2000:]
