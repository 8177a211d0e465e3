"""crc32c (Castagnoli), the checksum of WAL records, segment headers and snapshots: the `crc32c`
package's C function, loaded without running that package's `__init__`.

Why: `import crc32c` also reads its own version through `importlib.metadata` and imports its
command line (argparse): ~14 ms of every `jq serve` start, against 0.4 ms for the extension
itself (issue 20: restart to a healthy /health). Where the extension cannot be loaded by its
file (a frozen one-file binary lays extensions out its own way), the package is imported as
usual: the function is the same.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

__all__ = ["crc32c"]


def _extension() -> ModuleType | None:
    spec = importlib.util.find_spec("crc32c")  # locates the package; runs none of it
    if spec is None or not spec.submodule_search_locations:
        return None
    for directory in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(directory) / f"_crc32c{suffix}"
            if path.is_file():
                loader = importlib.machinery.ExtensionFileLoader("crc32c._crc32c", str(path))
                extension = importlib.util.spec_from_loader(loader.name, loader)
                if extension is None:
                    return None
                module = importlib.util.module_from_spec(extension)
                loader.exec_module(module)
                return module
    return None


def _load() -> Callable[..., int]:
    try:
        module = _extension()
    except (ImportError, OSError):
        module = None
    if module is not None:
        function: Callable[..., int] = module.crc32c
        return function
    from crc32c import crc32c as packaged

    return packaged


crc32c: Callable[..., int] = _load()
"""crc32c(data, value=0): the CRC of `data`, continuing from `value`."""
