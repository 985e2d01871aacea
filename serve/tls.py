"""Server TLS: the certificate files, checked before the server starts, reloaded when they change.

    credentials = server_credentials(TlsFiles(cert, key, client_ca))   # raises ConfigError
    server.add_secure_port("0.0.0.0:8500", credentials)

The files are checked with the standard library's `ssl` (no extra dependency): readable, a key
that matches the certificate, and a client CA file holding at least one CA certificate. grpcio's
dynamic credentials ask `Reloader.fetch` for the configuration at every new connection; it reads
the files again only when one of their modification times changed, so a rotated certificate is
used by the next connection without a restart (connections already open keep theirs). A rotation
caught half-written (cert and key that do not match yet) keeps the previous files until it is
complete.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)


class ConfigError(Exception):
    """A configuration the server refuses to start with; the message says what to fix."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the server's certificate chain and key, and optionally the CA of its clients."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())


@dataclass(frozen=True)
class _Loaded:
    mtimes: tuple[int, ...]
    config: grpc.ServerCertificateConfiguration


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"the {what} {path} is not a PEM file")
    return data


def check(files: TlsFiles) -> tuple[bytes, bytes, bytes | None]:
    """Read and check the files; returns (cert, key, client CA) PEM bytes or raises ConfigError."""
    cert, key = _read(files.cert, "TLS certificate"), _read(files.key, "TLS key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(files.cert, files.key)
    except ssl.SSLError as exc:
        problem = "does not match" if "KEY_VALUES_MISMATCH" in str(exc) else "cannot be used with"
        raise ConfigError(
            f"the TLS key {files.key} {problem} the certificate {files.cert} ({exc.reason})"
        ) from None
    if files.client_ca is None:
        return cert, key, None
    ca = _read(files.client_ca, "client CA file")
    store = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        store.load_verify_locations(cadata=ca.decode("ascii", "replace"))
    except ssl.SSLError as exc:
        raise ConfigError(f"the client CA file {files.client_ca} is unreadable: {exc}") from None
    if store.cert_store_stats()["x509_ca"] == 0:
        raise ConfigError(
            f"the client CA file {files.client_ca} holds no CA certificate "
            "(none has basicConstraints CA:TRUE); give the CA that signs the client certificates"
        )
    return cert, key, ca


def file_state(files: TlsFiles) -> tuple[int, ...]:
    """What tells a changed file: mtime, size, and inode (a swapped symlink, as Kubernetes does)."""
    stats = [path.stat() for path in files.paths()]
    return tuple(n for st in stats for n in (st.st_mtime_ns, st.st_size, st.st_ino))


def _load(files: TlsFiles) -> _Loaded:
    mtimes = file_state(files)
    cert, key, ca = check(files)
    config = grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)
    return _Loaded(mtimes, config)


class Reloader:
    """The certificate configuration fetcher: the files' current contents, once they changed."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._loaded = _load(files)  # raises ConfigError: the server does not start
        self._lock = threading.Lock()  # fetch runs on gRPC's threads
        self.reloads = 0

    @property
    def initial(self) -> grpc.ServerCertificateConfiguration:
        return self._loaded.config

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """None (keep the current configuration) unless a file changed and the new set is valid."""
        with self._lock:
            try:
                if file_state(self.files) == self._loaded.mtimes:
                    return None
                loaded = _load(self.files)
            except (OSError, ConfigError) as exc:
                log.warning("TLS files changed but cannot be used yet; keeping the old: %s", exc)
                return None
            self._loaded = loaded
            self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.files.cert)
        return loaded.config


def server_credentials(files: TlsFiles) -> tuple[grpc.ServerCredentials, Reloader]:
    """Credentials that reload changed files, and their reloader; raises ConfigError."""
    reloader = Reloader(files)
    credentials = grpc.dynamic_ssl_server_credentials(
        reloader.initial,
        reloader.fetch,
        require_client_authentication=files.client_ca is not None,
    )
    return credentials, reloader
