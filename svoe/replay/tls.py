"""TLS material of the replay exchange: cryptofeed refuses websocket addresses that are not wss://."""

from __future__ import annotations

import ssl
from pathlib import Path


def throwaway_tls(directory: Path, host: str) -> tuple[ssl.SSLContext, Path]:
    """A throw-away CA and a server certificate for ``host`` (and localhost/loopback)."""
    try:
        import trustme
    except ImportError as exc:  # trustme is a dev dependency: the replay is a test and benchmark tool
        raise RuntimeError(
            "the replay server needs trustme for its throw-away certificate: uv sync --group dev"
        ) from exc

    ca = trustme.CA(organization_name="svoe replay")
    names = list(dict.fromkeys([host, "localhost", "127.0.0.1", "::1"]))
    cert = ca.issue_cert(*names)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    ca_file = directory / "replay-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ctx, ca_file


def given_tls(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A certificate issued elsewhere (the kind e2e's, for the exchange's Service name)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx
