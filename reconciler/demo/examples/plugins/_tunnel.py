"""A local TLS tunnel to a listener the server opened through the go-plugin broker.

The server's broker listeners present go-plugin's P-521 certificate, which
grpcio's TLS cannot handle. So the plugin's gRPC client speaks plaintext to a
unix socket in a private directory, and this tunnel carries the bytes over
TLS made by Python's `ssl` module (OpenSSL), with the plugin's certificate as
client certificate and the server's certificate as the only trusted root.
asyncio's TLS streams are used because an `ssl.SSLSocket` must not be read
and written from two threads at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024


def client_context(cert_pem: bytes, key_pem: bytes, trusted_pem: bytes) -> ssl.SSLContext:
    """TLS client settings for dialing the server: mutual TLS, HTTP/2 via ALPN."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cadata=trusted_pem.decode())
    # load_cert_chain only reads files: write them in a private directory and
    # remove them at once.
    with tempfile.TemporaryDirectory(prefix="plugin-tls-") as directory:
        cert_file = Path(directory, "cert.pem")
        key_file = Path(directory, "key.pem")
        cert_file.write_bytes(cert_pem)
        key_file.touch(mode=0o600)
        key_file.write_bytes(key_pem)
        context.load_cert_chain(cert_file, key_file)
    # gRPC servers written in Go refuse TLS connections that did not negotiate h2.
    context.set_alpn_protocols(["h2"])
    return context


class Tunnel:
    """Plaintext unix socket here, TLS to `network`/`address` there."""

    def __init__(
        self, network: str, address: str, context: ssl.SSLContext, local_path: str
    ) -> None:
        """`local_path` must be in a directory only this user can enter."""
        if network not in ("unix", "tcp"):
            raise ValueError(f"unsupported broker network {network!r}")
        self.network = network
        self.address = address
        self._context = context
        self.local_path = local_path
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def start(self, timeout: float = 5.0) -> str:
        """Start listening; returns the gRPC target of the plaintext side."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        future.result(timeout)
        return f"unix:{self.local_path}"

    def close(self) -> None:
        """Remove the socket (the event loop dies with the process)."""
        with contextlib.suppress(OSError):
            os.unlink(self.local_path)

    async def _listen(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=self.local_path)

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.network == "unix":
            return await asyncio.open_unix_connection(
                self.address, ssl=self._context, server_hostname="localhost"
            )
        host, _, port = self.address.rpartition(":")
        return await asyncio.open_connection(
            host.strip("[]"), int(port), ssl=self._context, server_hostname="localhost"
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await self._open_upstream()
        except (OSError, ssl.SSLError) as exc:
            log.error("storage tunnel: cannot reach %s %s: %s", self.network, self.address, exc)
            writer.close()
            return
        await asyncio.gather(
            _pump(reader, upstream_writer),
            _pump(upstream_reader, writer),
        )


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        writer.close()
