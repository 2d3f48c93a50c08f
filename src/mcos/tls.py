"""One TLS context per process for the HTTP clients that verify servers with the default CAs.

Building a verifying context reads and parses the whole CA bundle: about 30 ms of CPU, paid by
every ``httpx`` client created with ``verify=True`` (an agent made two before it was healthy).
:func:`verified_context` builds it once, exactly as ``httpx`` would (``SSL_CERT_FILE`` /
``SSL_CERT_DIR`` honoured, else certifi's bundle), and every such client shares it. The fork
server builds it before forking, so its agents inherit it and build none.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def verified_context() -> ssl.SSLContext:
    """The process's shared context for verifying servers against the default CAs (built on
    first use; never to be changed by a caller — build your own for a private CA)."""
    return httpx.create_ssl_context()
