"""CURVE encryption and key-based authentication of every socket (the ``[security]`` section).

Off by default. When keys are configured, every socket a component makes is a
:class:`SecureSocket`: binding it makes it a CURVE *server* (with the deployment's server
key pair), connecting it makes it a CURVE *client* (with this machine's client key pair and
the servers' public key). Because this happens in the socket class of the process's one
context, no component (and no later socket) can forget it: REQ sync sockets, the status
endpoint and sockets added by future components are all covered. ``inproc://`` stays
plain: it never leaves the process (and the ZAP handler itself lives there).

A ZAP handler (``zmq.auth.thread.ThreadAuthenticator``) in every process that binds accepts
only clients whose public key is a ``*.key`` file in the allowed directory, and logs (rate
limited) and counts every refusal.

Key layout made by ``framepipe keys generate DIR``::

    DIR/server.key            public key of the servers (copy to every machine)
    DIR/server.key_secret     secret key of the servers (machines that bind only)
    DIR/<client>.key          public key of a client
    DIR/<client>.key_secret   secret key of a client (the machine that uses it only)
    DIR/allowed_clients/      public keys the servers accept (*.key)
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from framepipe.config import SecurityConfig
from framepipe.core.errors import ConfigError
from framepipe.core.logs import RateLimitedLog

SERVER = "server"
DEFAULT_CLIENT = "client"
ALLOWED_DIR = "allowed_clients"


class Security:
    """The keys of one process, loaded lazily (a worker never needs the server secret)."""

    def __init__(self, cfg: SecurityConfig):
        self.cfg = cfg
        self._server: tuple[bytes, bytes] | None = None
        self._client: tuple[bytes, bytes, bytes] | None = None

    @property
    def enabled(self) -> bool:
        return self.cfg.enabled

    def _path(self, key: str, default_name: str) -> str:
        explicit = getattr(self.cfg, key)
        if explicit:
            return str(explicit)
        if not self.cfg.key_dir:
            raise ConfigError("needed for CURVE: set it or security.key_dir", key=f"security.{key}")
        return os.path.join(self.cfg.key_dir, default_name)

    def _load(self, key: str, default_name: str, *, secret: bool) -> tuple[bytes, bytes | None]:
        path = self._path(key, default_name)
        try:
            public, secret_key = zmq.auth.load_certificate(path)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load CURVE key {path}: {e}", key=f"security.{key}") from None
        if secret and not secret_key:
            raise ConfigError(f"{path} holds no secret key (use the .key_secret file)", key=f"security.{key}")
        return public, secret_key

    def server_keys(self) -> tuple[bytes, bytes]:
        """(public, secret) of the binding side."""
        if self._server is None:
            public, secret = self._load("server_secret_key", f"{SERVER}.key_secret", secret=True)
            assert secret is not None
            self._server = (public, secret)
        return self._server

    def client_keys(self) -> tuple[bytes, bytes, bytes]:
        """(client public, client secret, server public) of the connecting side."""
        if self._client is None:
            public, secret = self._load("client_secret_key", f"{DEFAULT_CLIENT}.key_secret", secret=True)
            server_public, _ = self._load("server_public_key", f"{SERVER}.key", secret=False)
            assert secret is not None
            self._client = (public, secret, server_public)
        return self._client

    def allowed_dir(self) -> str:
        path = self._path("allowed_clients_dir", ALLOWED_DIR)
        if not os.path.isdir(path):
            raise ConfigError(f"allowed clients directory {path} does not exist", key="security.allowed_clients_dir")
        return path

    def allowed_keys(self) -> set[bytes]:
        """Public keys (z85) of the clients a server accepts."""
        keys = set(zmq.auth.load_certificates(self.allowed_dir()))
        if not keys:
            raise ConfigError(f"no *.key files in {self.allowed_dir()}", key="security.allowed_clients_dir")
        return keys

    def make_server(self, sock: zmq.Socket[Any]) -> None:
        public, secret = self.server_keys()
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True

    def make_client(self, sock: zmq.Socket[Any]) -> None:
        public, secret, server_public = self.client_keys()
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_serverkey = server_public


class SecureSocket(zmq.Socket):  # type: ignore[type-arg]
    """A socket that becomes a CURVE server on bind and a CURVE client on connect."""

    def bind(self, addr: str) -> Any:
        security: Security | None = getattr(self.context, "security", None)
        if security is not None and security.enabled and not addr.startswith("inproc://"):
            security.make_server(self)
            if isinstance(self.context, SecureContext):
                self.context.start_authenticator()
        return super().bind(addr)

    def connect(self, addr: str) -> Any:
        security: Security | None = getattr(self.context, "security", None)
        if security is not None and security.enabled and not addr.startswith("inproc://"):
            security.make_client(self)
        return super().connect(addr)


class SecureContext(zmq.Context):  # type: ignore[type-arg]
    """The process's one context: its sockets apply ``security``; it owns the ZAP handler."""

    _socket_class = SecureSocket
    # attributes of zmq.Context subclasses must exist on the class (else they are sockopts)
    security: Security | None = None
    authenticator: ThreadAuthenticator | None = None
    on_denied: Callable[[str], None] | None = None

    def start_authenticator(self) -> None:
        """Start the ZAP handler once, before the first CURVE server socket binds."""
        if self.authenticator is not None or self.security is None:
            return
        allowed = self.security.allowed_keys()
        log = logging.getLogger("framepipe.auth")
        warn = RateLimitedLog(log, interval_s=5.0)
        on_denied = self.on_denied
        where = self.security.allowed_dir()

        class _Allowed:
            """ZAP credentials provider: a key in the allowed directory, nothing else."""

            def callback(self, domain: str, key: bytes) -> bool:
                if key in allowed:
                    return True
                # a refused client retries its handshake on every reconnect: rate limit
                warn.warning(
                    "denied",
                    "refused a CURVE client with unknown public key %s (not in %s)",
                    key.decode(errors="replace"),
                    where,
                )
                if on_denied is not None:
                    on_denied(key.decode(errors="replace"))
                return False

        auth = ThreadAuthenticator(self, log=logging.getLogger("framepipe.auth.zap"))
        auth.start()
        auth.configure_curve_callback("*", credentials_provider=_Allowed())
        self.authenticator = auth

    def stop_authenticator(self) -> None:
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None


def make_context(cfg: SecurityConfig, on_denied: Callable[[str], None] | None = None) -> SecureContext:
    """A context whose tcp sockets use CURVE when ``cfg`` has keys (plain otherwise)."""
    ctx = SecureContext()
    ctx.security = Security(cfg)
    ctx.on_denied = on_denied
    return ctx


def is_exposed(url: str) -> bool:
    """True when a bind URL is reachable from other machines (``*``, a non-loopback address)."""
    if not url.startswith("tcp://"):
        return False
    host = url.removeprefix("tcp://").rpartition(":")[0].strip("[]")
    if host in ("*", "0.0.0.0", "::"):
        return True
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a host name: assume it resolves to a LAN address


def generate_keys(directory: str | os.PathLike[str], clients: list[str] | None = None) -> list[Path]:
    """``framepipe keys generate DIR``: the server pair, client pairs, and the allowed directory.

    Refuses to overwrite existing keys (a new server key would lock every client out).
    Secret files are made readable by their owner only. Returns the files written.
    """
    base = Path(directory)
    names = clients or [DEFAULT_CLIENT]
    for name in names:
        if not name or not name.replace("-", "").replace("_", "").isalnum() or name == SERVER:
            raise ConfigError(f"client name {name!r}: use letters, digits, '-' and '_' (not 'server')")
    for name in (SERVER, *names):
        for suffix in (".key", ".key_secret"):
            if (base / f"{name}{suffix}").exists():
                raise ConfigError(f"{base / (name + suffix)} exists: framepipe never overwrites keys")
    allowed = base / ALLOWED_DIR
    allowed.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name in (SERVER, *names):
        public, secret = zmq.auth.create_certificates(base, name)
        os.chmod(secret, 0o600)
        written += [Path(public), Path(secret)]
        if name != SERVER:
            shutil.copy(public, allowed / f"{name}.key")
            written.append(allowed / f"{name}.key")
    return written
