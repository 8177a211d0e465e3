"""uvicorn's `Config` and `Server`, the two pieces of uvicorn that `jq serve` runs, loaded without
running uvicorn's package `__init__`.

Why: `import uvicorn` runs `uvicorn/__init__.py`, which imports `uvicorn.main`: uvicorn's own
command line (click) and its process supervisors (multiprocessing, watchfiles), ~25 ms of every
start of a server that uses neither (issue 20: restart to a healthy /health). So the package is
created from its spec without executing it, and only `uvicorn.config` and `uvicorn.server` are
imported into it; the protocols, loops and lifespan that `Config.load()` picks are ordinary
submodule imports and need nothing more (`uvicorn.lifespan.on` asks the package for `Config`,
which is set here). Whoever later asks the package for anything else (`uvicorn.run`,
`uvicorn.__version__`) gets the real `__init__` run then, once: the package is whole again.

Imported before anything else imports uvicorn (jq_tool/server/runner.py does so first; the
single-node import test fails if click or `uvicorn.main` come back). Where uvicorn is already
imported, or its package cannot be made this way, this is a plain `import uvicorn`.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any


def _package_without_init() -> ModuleType | None:
    """The `uvicorn` package module, registered but not executed; None if that cannot be done."""
    spec = importlib.util.find_spec("uvicorn")  # locates the package; runs none of it
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return None
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def complete(name: str) -> Any:
        # A name only the real __init__ defines: run it now, in this same module object.
        del package.__dict__["__getattr__"]
        loader.exec_module(package)
        return getattr(package, name)

    package.__dict__["__getattr__"] = complete  # PEP 562: asked for names not set here
    sys.modules["uvicorn"] = package
    return package


def _make_lean() -> None:
    if "uvicorn" in sys.modules:
        return  # imported already, whole or lean: nothing to save
    package = _package_without_init()
    if package is None:
        return
    import uvicorn.config
    import uvicorn.server

    package.Config = uvicorn.config.Config  # type: ignore[attr-defined]
    package.Server = uvicorn.server.Server  # type: ignore[attr-defined]


_make_lean()

from uvicorn.config import Config  # noqa: E402
from uvicorn.server import Server  # noqa: E402

__all__ = ["Config", "Server"]
