"""Modules that `jq serve`'s dependencies import at their top but that a server uses rarely or
never, registered unexecuted and run on their first use (issue 20: restart to a healthy
/health).

Which and why (measured with `-X importtime`, a restart with 10k jobs, least self time of 6):
- `http.client`, and through it the `email` package's parser (~7 ms): Starlette's exceptions
  module imports it only to look up a status's reason phrase when an `HTTPException` is made
  without a detail, which jq's routes never do (Starlette's own 404/405 do).
- `logging.config`, and through it `logging.handlers`, `socketserver`, `pickle` and `queue`
  (~4 ms): uvicorn's config imports it for `dictConfig`, which runs only when uvicorn is given
  a logging config; `jq serve` gives none (server/runner.py configures logging itself).
- `html`, and its table of entities (~2 ms): Starlette's server-error middleware escapes a
  traceback with it on a debug page, which jq never serves.
- `http.cookies` (~1 ms): Starlette's requests and responses import it for `Request.cookies`
  and `Response.set_cookie`; jq's API and dashboard use no cookies.
- `bz2` and `lzma` (~1.5 ms): `shutil` (imported by `tempfile`, for Starlette's form parser)
  imports them only to learn whether its archive formats are available; and `shutil` itself,
  which `tempfile` needs only to remove a temporary directory.
- `anyio.abc` and `anyio.to_thread`, with the parts of anyio's core they import (~2 ms):
  Starlette imports them for a type annotation and for running synchronous code in a thread,
  which no route of jq's does (its routes are coroutines).
- `hashlib`, `calendar` and three modules of the `email` package (~1.5 ms):
  imported at the top of modules that call them only in functions a restart does not reach
  (`hashlib` is run by the first request with an API key, ~0.5 ms once).

The list was found by deferring every module a restart imports, then keeping those still not
run after /health and a job request, less those whose running cost nothing measurable.

A deferred module is an empty module object in `sys.modules` (and on its package) whose
first attribute look-up from any thread runs the real module into it, under a lock, exactly
once; from then on it is that module. `import x` and `import x.y` find it there and ask it
nothing, so nothing runs until a name is used; `from x import name` uses a name and runs it at
once, which is correct, only not deferred. A module already imported is left alone.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
from typing import Any

# The names, each with what imports it in a `jq serve` (kept in step with the module docstring
# and tests/server/test_single_node_imports.py).
DEFERRED = (
    "http.client",  # starlette.exceptions
    "http.cookies",  # starlette.requests, starlette.responses
    "logging.config",  # uvicorn.config
    "html",  # starlette.middleware.errors
    "bz2",  # shutil
    "lzma",  # shutil
    "shutil",  # tempfile
    "anyio.abc",  # starlette._utils
    "anyio.to_thread",  # starlette.concurrency, starlette.responses
    "hashlib",  # starlette.responses, hmac, jq_tool.auth.keys, jq_tool.core.fingerprint
    "calendar",  # email._parseaddr (through email.utils, for starlette.responses)
    "email.errors",  # email.charset (the same way)
    "email.base64mime",  # email.charset
    "email.quoprimime",  # email.charset
)

_loading = threading.RLock()
_running: set[str] = set()  # deferred modules being run now (by the thread holding _loading)


class _Deferred(types.ModuleType):
    """A module not run yet. `__getattr__` is consulted only for names the module's dict lacks,
    so the attributes set at creation (`__spec__`, `__name__`, …) cost nothing."""

    def __getattr__(self, name: str) -> Any:
        # Another thread asking while the module runs waits for the lock, then finds it whole.
        with _loading:
            spec = self.__spec__  # set by defer(), with its loader
            if type(self) is _Deferred:
                assert spec is not None and spec.loader is not None
                if spec.name in _running:
                    # Asked by its own run (an import cycle): a name not set yet, as in any
                    # module imported halfway.
                    raise AttributeError(
                        f"partially initialized module {spec.name!r} has no attribute {name!r}"
                    )
                _running.add(spec.name)
                try:
                    spec.loader.exec_module(self)
                except BaseException:
                    sys.modules.pop(spec.name, None)  # as a failed import leaves it
                    raise
                finally:
                    _running.discard(spec.name)
                    self.__class__ = types.ModuleType  # type: ignore[assignment]
        return getattr(self, name)


def defer(name: str) -> None:
    """Register `name` deferred, unless it is imported already or cannot be found."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)  # imports the parent package, runs nothing of name
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _Deferred
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)


def defer_unused_imports() -> None:
    """Defer every module of DEFERRED; called by `jq serve` before the server's imports."""
    for name in DEFERRED:
        defer(name)
