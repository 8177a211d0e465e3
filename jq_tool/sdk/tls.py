"""TLS for the SDK's connections: the one place a client's `verify=` setting becomes the
`ssl.SSLContext` its `https://` connections use.

`verify=True` (the default) checks the server's certificate and host name against the system's
CA store (OpenSSL's default paths, so `SSL_CERT_FILE` / `SSL_CERT_DIR` apply); a path names a CA
bundle file (or a directory of hashed CA certificates) to trust instead; `False` turns checking
off, for tests against a self-signed server only; an `ssl.SSLContext` is used as given.
"""

from __future__ import annotations

import os
import ssl
from typing import TypeAlias

Verify: TypeAlias = bool | str | os.PathLike[str] | ssl.SSLContext


def tls_context(verify: Verify) -> ssl.SSLContext:
    """The context for https connections under `verify` (see the module docstring)."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is True:
        return ssl.create_default_context()
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if isinstance(verify, str | os.PathLike):
        path = os.fspath(verify)
        if os.path.isdir(path):
            return ssl.create_default_context(capath=path)
        if not os.path.isfile(path):
            raise ValueError(f"verify: no CA bundle at {path!r}")
        return ssl.create_default_context(cafile=path)
    raise TypeError(f"verify must be a bool, a CA bundle path or an ssl.SSLContext, not {verify!r}")
