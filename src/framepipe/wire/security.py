"""CURVE encryption, role-bound keys, and who may send what (the ``[security]`` section).

Off by default. When keys are configured, every socket a component makes is a
:class:`SecureSocket`: binding it makes it a CURVE *server* (with the deployment's server
key pair), connecting it makes it a CURVE *client* (with this process's client key pair and
the servers' public key). Because this happens in the socket class of the process's one
context, no component (and no later socket) can forget it: REQ sync sockets, the status
endpoint and sockets added by future components are all covered. ``inproc://`` stays
plain: it never leaves the process (and the ZAP handler itself lives there).

Keys are bound to roles (:data:`ROLES`): a client key is allowed by being a file in
``allowed_clients/<role>/``. Every binding socket names its endpoint (``Component.bind``'s
``what``), which becomes its ZAP domain, and :data:`ADMITS` says which roles each endpoint
takes. The ZAP handler (:class:`RoleAuthenticator`, one per process that binds) refuses a
key that is unknown or of a role the endpoint does not admit, at the handshake, and logs it
(rate limited); an admitted peer's ZAP User-Id is ``<role>:<key name>``, which every message
it sends carries (:func:`peer_role`). Where an endpoint admits several roles, the receiver
asks :class:`Trust` before acting on a message that changes state; without CURVE there are
no identities and :class:`Trust` goes by the sender's address (``Peer-Address``).

Key layout made by ``framepipe keys generate DIR`` (one client pair per role by default)::

    DIR/server.key                     public key of the servers (copy to every machine)
    DIR/server.key_secret              secret key of the servers (machines that bind only)
    DIR/<name>.key_secret              a client's key pair (only the machine of that client)
    DIR/<name>.key                     its public key
    DIR/allowed_clients/<role>/<name>.key   public keys the servers accept, by role

A client process uses ``DIR/<its role>.key_secret`` unless ``client_secret_key`` says
otherwise. Keys directly in ``allowed_clients/`` (the layout before roles) are refused with
a line saying where to move them: a key without a role would be a key for everything.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import shutil
import socket as pysocket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from framepipe.config import Config, SecurityConfig
from framepipe.core.errors import ConfigError
from framepipe.core.logs import RateLimitedLog

SERVER = "server"
ALLOWED_DIR = "allowed_clients"

#: the roles a client key can have; each component connects with its own role's key
ROLES = ("publisher", "ventilator", "sink", "worker", "recorder", "viewer", "operator")
EVERY_ROLE = frozenset(ROLES)

#: endpoint (``Component.bind``'s ``what``, also the socket's ZAP domain) → roles it admits.
#: The one table of who may connect where; an endpoint missing here cannot bind with CURVE.
ADMITS: dict[str, frozenset[str]] = {
    "tasks": frozenset({"worker"}),  # ventilator PUSH
    "results-in": frozenset({"worker"}),  # sink PULL
    "control": frozenset({"ventilator", "worker"}),  # sink PUB: acks, stop
    "frames": frozenset({"ventilator", "recorder"}),  # publisher XPUB
    # hello/bye of its subscribers, and the sink's report of each acquisition (a bye)
    "frames-sync": frozenset({"ventilator", "recorder", "sink"}),
    "frames-preview": frozenset({"viewer", "operator"}),  # drops for a slow reader
    "results": frozenset({"recorder"}),  # sink XPUB
    "results-sync": frozenset({"ventilator", "recorder"}),  # hello/bye, the ventilator's eos
    "results-preview": frozenset({"viewer", "operator"}),
    # read-only for everyone; its `stop` is checked per message (Trust, action "control")
    "status": EVERY_ROLE,
    # acquire/stop/shutdown; components that report to it are added with Component.bind(admit=...)
    "acquisition-control": frozenset({"operator"}),
}

#: what a message may do → roles allowed to (checked per message by Trust.may)
Action = Literal["end_of_stream", "control"]
MAY: dict[Action, frozenset[str]] = {
    "end_of_stream": frozenset({"ventilator"}),
    "control": frozenset({"operator"}),
}


def admitted(what: str, also: Iterable[str] = ()) -> frozenset[str]:
    """The roles endpoint ``what`` admits (plus ``also``); an unknown endpoint is a bug."""
    if what not in ADMITS:
        raise ValueError(f"endpoint {what!r} has no entry in wire/security.py ADMITS: say which roles it admits")
    extra = frozenset(also)
    if not extra <= EVERY_ROLE:
        raise ValueError(f"unknown role(s) {sorted(extra - EVERY_ROLE)} (roles: {', '.join(ROLES)})")
    return ADMITS[what] | extra


def key_prefix(z85_key: str | bytes) -> str:
    """Enough of a public key to find it in ``allowed_clients/`` (logs)."""
    text = z85_key.decode(errors="replace") if isinstance(z85_key, bytes) else z85_key
    return text[:12] + "…"


@dataclasses.dataclass(frozen=True, slots=True)
class AllowedKey:
    """A client public key from ``allowed_clients/<role>/<name>.key``."""

    role: str
    name: str

    @property
    def user_id(self) -> str:
        """The ZAP User-Id of its connections: ``<role>:<name>``."""
        return f"{self.role}:{self.name}"


def load_allowed(directory: str | os.PathLike[str]) -> dict[bytes, AllowedKey]:
    """Public keys (z85) → role and name, from ``directory/<role>/*.key``.

    One line on anything unclear: keys outside a role directory (the old layout), a
    directory that is not a role, a key under two roles, no key at all.
    """
    base = Path(directory)
    loose = sorted(p.name for p in base.glob("*.key"))
    if loose:
        raise ConfigError(
            f"{base} holds client keys outside a role directory ({', '.join(loose)}): keys are bound to roles "
            f"now; move each into {base}/<role>/ (roles: {', '.join(ROLES)}), e.g. mv {base}/{loose[0]} {base}/worker/",
            key="security.allowed_clients_dir",
        )
    keys: dict[bytes, AllowedKey] = {}
    for sub in sorted(p for p in base.iterdir() if p.is_dir()):
        if sub.name not in EVERY_ROLE:
            raise ConfigError(
                f"{sub} is not a role directory (roles: {', '.join(ROLES)})", key="security.allowed_clients_dir"
            )
        for path in sorted(sub.glob("*.key")):
            try:
                public, _ = zmq.auth.load_certificate(path)
            except (OSError, ValueError) as e:
                raise ConfigError(f"cannot load CURVE key {path}: {e}", key="security.allowed_clients_dir") from None
            other = keys.get(public)
            if other is not None and other.role != sub.name:
                raise ConfigError(
                    f"{path} is also allowed as {other.role} ({other.name}.key): one role per key",
                    key="security.allowed_clients_dir",
                )
            keys[public] = AllowedKey(sub.name, path.stem)
    if not keys:
        raise ConfigError(f"no <role>/*.key files in {base}", key="security.allowed_clients_dir")
    return keys


class Security:
    """The keys of one process, loaded lazily (a worker never needs the server secret)."""

    def __init__(self, cfg: SecurityConfig, role: str = "operator"):
        self.cfg = cfg
        #: whose client key this process uses by default ({key_dir}/<role>.key_secret)
        self.role = role
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
        if not os.path.exists(path):
            hint = f" (`framepipe keys generate {self.cfg.key_dir}`)" if self.cfg.key_dir else ""
            raise ConfigError(f"CURVE key {path} is missing{hint}", key=f"security.{key}")
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
            if self.role not in EVERY_ROLE and not self.cfg.client_secret_key:
                raise ConfigError(
                    f"no key of its own for a {self.role}: set it (roles with a default key: {', '.join(ROLES)})",
                    key="security.client_secret_key",
                )
            public, secret = self._load("client_secret_key", f"{self.role}.key_secret", secret=True)
            server_public, _ = self._load("server_public_key", f"{SERVER}.key", secret=False)
            assert secret is not None
            self._client = (public, secret, server_public)
        return self._client

    def allowed_dir(self) -> str:
        path = self._path("allowed_clients_dir", ALLOWED_DIR)
        if not os.path.isdir(path):
            raise ConfigError(f"allowed clients directory {path} does not exist", key="security.allowed_clients_dir")
        return path

    def allowed_keys(self) -> dict[bytes, AllowedKey]:
        """Public keys (z85) of the clients a server accepts, with their roles."""
        return load_allowed(self.allowed_dir())

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


class RoleAuthenticator(ThreadAuthenticator):
    """The ZAP handler: a key is let in where its role is admitted; its User-Id names both.

    pyzmq asks the credentials provider registered for the socket's ZAP domain (our
    endpoint name) and, once it says yes, :meth:`curve_user_id` for the User-Id.
    """

    def __init__(
        self,
        context: zmq.Context[Any],
        keys: dict[bytes, AllowedKey],
        where: str,
        on_denied: Callable[[str], None] | None = None,
    ):
        super().__init__(context, log=logging.getLogger("framepipe.auth.zap"))
        self.keys = keys
        self.where = where
        self.on_denied = on_denied
        #: endpoint (ZAP domain) → the roles it admits
        self.domains: dict[str, frozenset[str]] = {}
        self.warn = RateLimitedLog(logging.getLogger("framepipe.auth"), interval_s=5.0)

    def admit(self, domain: str, roles: frozenset[str]) -> None:
        """Say which roles the sockets of ZAP domain ``domain`` admit."""
        self.domains[domain] = roles
        self.configure_curve_callback(domain, credentials_provider=self)

    def callback(self, domain: str, key: bytes) -> bool:
        """pyzmq's credentials provider hook: ``key`` is the client's z85 public key."""
        known = self.keys.get(key)
        if known is not None and known.role in self.domains.get(domain, frozenset()):
            return True
        if known is None:
            why = f"unknown key, not in {self.where}/<role>/"
        else:
            why = f"role {known.role}, key {known.name}"
        # a refused client retries its handshake on every reconnect: rate limit per endpoint and role
        self.warn.warning(
            f"denied:{domain}:{known.role if known else '?'}",
            "auth: refused key %s (%s) on %s",
            key_prefix(key),
            why,
            domain,
        )
        if self.on_denied is not None:
            self.on_denied(key.decode(errors="replace"))
        return False

    def curve_user_id(self, client_public_key: bytes) -> str:
        known = self.keys.get(z85.encode(client_public_key))
        return known.user_id if known is not None else ""


class SecureSocket(zmq.Socket):  # type: ignore[type-arg]
    """A socket that becomes a CURVE server on bind and a CURVE client on connect."""

    def bind(self, addr: str) -> Any:
        security: Security | None = getattr(self.context, "security", None)
        if security is not None and security.enabled and not addr.startswith("inproc://"):
            if not self.get(zmq.ZAP_DOMAIN):
                raise ConfigError(f"binding {addr} with CURVE needs the endpoint's name (bind through Component.bind)")
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
    authenticator: RoleAuthenticator | None = None
    on_denied: Callable[[str], None] | None = None
    #: endpoint → roles, for the endpoints named before the ZAP handler starts
    domains: dict[str, frozenset[str]] | None = None

    def admit(self, domain: str, roles: frozenset[str]) -> None:
        if self.domains is None:
            self.domains = {}
        self.domains[domain] = roles
        if self.authenticator is not None:
            self.authenticator.admit(domain, roles)

    def start_authenticator(self) -> None:
        """Start the ZAP handler once, before the first CURVE server socket binds."""
        if self.authenticator is not None or self.security is None:
            return
        auth = RoleAuthenticator(self, self.security.allowed_keys(), self.security.allowed_dir(), self.on_denied)
        auth.start()
        for domain, roles in (self.domains or {}).items():
            auth.admit(domain, roles)
        self.authenticator = auth

    def stop_authenticator(self) -> None:
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None


def make_context(
    cfg: SecurityConfig, on_denied: Callable[[str], None] | None = None, *, role: str = "operator"
) -> SecureContext:
    """A context whose tcp sockets use CURVE when ``cfg`` has keys (plain otherwise);
    connecting, it uses ``role``'s client key unless ``cfg`` names one."""
    ctx = SecureContext()
    ctx.security = Security(cfg, role)
    ctx.on_denied = on_denied
    return ctx


def admit(sock: zmq.Socket[Any], what: str, also: Iterable[str] = ()) -> None:
    """Before binding ``sock`` as endpoint ``what``: its ZAP domain, so the ZAP handler
    lets in only the roles :data:`ADMITS` (plus ``also``) names. Checks ``what`` always."""
    roles = admitted(what, also)
    ctx = sock.context
    if isinstance(ctx, SecureContext) and ctx.security is not None and ctx.security.enabled:
        sock.setsockopt(zmq.ZAP_DOMAIN, what.encode())
        ctx.admit(what, roles)


# ---------------------------------------------------------------------------- per message


def _property(frame: zmq.Frame, name: str) -> str | None:
    try:
        value = frame.get(name)
    except (zmq.ZMQError, AttributeError, TypeError):
        return None  # no such metadata (no ZAP, not a received frame)
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def peer_role(frame: zmq.Frame) -> str | None:
    """The role of the key that sent ``frame`` (CURVE), or None (no CURVE: no identities).

    Only frames received with ``copy=False`` carry metadata."""
    return Peer.of(frame).role


def peer_address(frame: zmq.Frame) -> str:
    """The sender's IP address (``Peer-Address``), or "" when the transport has none."""
    return _property(frame, "Peer-Address") or ""


@dataclasses.dataclass(frozen=True, slots=True)
class Peer:
    """Who sent a message, as the transport vouches for it (never as the message says)."""

    address: str = ""
    #: the ZAP User-Id, ``<role>:<key name>``, under CURVE; None without
    user_id: str | None = None

    @classmethod
    def of(cls, frame: zmq.Frame) -> Peer:
        """From a frame received with ``copy=False``."""
        return cls(peer_address(frame), _property(frame, "User-Id") or None)

    @property
    def role(self) -> str | None:
        if not self.user_id:
            return None
        role = self.user_id.partition(":")[0]
        return role if role in EVERY_ROLE else None

    @property
    def key(self) -> str | None:
        """The name of the key (its file in ``allowed_clients/<role>/``)."""
        return self.user_id.partition(":")[2] or None if self.user_id else None

    def __str__(self) -> str:
        where = self.address or "an unknown address"
        if self.user_id:
            return f"key {self.key} (role {self.role}) at {where}"
        return where


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: a host name is looked up again at most this often (a refused address asks again)
RESOLVE_EVERY_S = 30.0


def _ip(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text.partition("%")[0].strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class Trust:
    """Whether a message's sender may do what it asks (end a stream, stop, acquire).

    With CURVE the verified key's role decides (:data:`MAY`). Without CURVE there are no
    identities, only addresses: an end of stream only from the address(es) of
    ``ventilator.host``; control only from loopback or ``security.operator_hosts``.
    Host names are resolved on first use, and again (at most every RESOLVE_EVERY_S) when
    an unknown address asks: a message never waits on DNS more often than that.
    """

    def __init__(self, config: Config):
        self.curve = config.security.enabled
        self.hosts: dict[Action, tuple[str, ...]] = {
            "end_of_stream": (config.ventilator.host,),
            "control": tuple(config.security.operator_hosts),
        }
        #: host → (when looked up, its addresses)
        self._resolved: dict[str, tuple[float, frozenset[str]]] = {}

    def may(self, sender: Peer | zmq.Frame, action: Action) -> str | None:
        """None if ``sender`` may do ``action``, else the one-line reason to refuse it."""
        peer = sender if isinstance(sender, Peer) else Peer.of(sender)
        if self.curve:
            if peer.role in MAY[action]:
                return None
            who = f"key {peer.key} (role {peer.role})" if peer.role else "a key without a role"
            roles = "/".join(sorted(MAY[action]))
            return f"{action} refused from {who} at {peer.address or '?'}: only {roles} keys may"
        ip = _ip(peer.address)
        if ip is not None and action == "control" and ip.is_loopback:
            return None
        if ip is not None and any(str(ip) in self._resolve(host, ip) for host in self.hosts[action]):
            return None
        where = {"end_of_stream": "ventilator.host", "control": "loopback or security.operator_hosts"}[action]
        hosts = ", ".join(self.hosts[action]) or "none set"
        return f"{action} refused from {peer.address or 'an unknown address'}: not {where} ({hosts})"

    def _resolve(self, host: str, seen: IPAddress) -> frozenset[str]:
        """The addresses of ``host``; looked up again when ``seen`` is not among them and the
        last look-up is older than RESOLVE_EVERY_S (a moved host), never more often."""
        now = time.monotonic()
        cached = self._resolved.get(host)
        if cached is not None and (str(seen) in cached[1] or now - cached[0] < RESOLVE_EVERY_S):
            return cached[1]
        found: set[str] = set()
        direct = _ip(host)
        if direct is not None:
            found.add(str(direct))
        elif host != "*":
            try:
                infos = pysocket.getaddrinfo(host, None, proto=pysocket.IPPROTO_TCP)
            except OSError:
                infos = []  # refused, with the reason naming the host
            for info in infos:
                ip = _ip(str(info[4][0]))
                if ip is not None:
                    found.add(str(ip))
        self._resolved[host] = (now, frozenset(found))
        return self._resolved[host][1]


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


def parse_client(spec: str) -> AllowedKey:
    """``ROLE`` or ``ROLE:NAME`` (``keys generate --client``); the name defaults to the role."""
    role, _, name = spec.partition(":")
    name = name or role
    if role not in EVERY_ROLE:
        raise ConfigError(f"client {spec!r}: the role must be one of {', '.join(ROLES)} (ROLE or ROLE:NAME)")
    if not name.replace("-", "").replace("_", "").isalnum() or name == SERVER:
        raise ConfigError(f"client name {name!r}: use letters, digits, '-' and '_' (not 'server')")
    return AllowedKey(role, name)


def generate_keys(directory: str | os.PathLike[str], clients: list[str] | None = None) -> list[Path]:
    """``framepipe keys generate DIR``: the server pair, client pairs, and the allowed directory.

    ``clients`` are ``ROLE`` or ``ROLE:NAME`` (several names per role: one per machine,
    revoked one by one); by default one pair per role, named after it. Refuses to
    overwrite existing keys (a new server key would lock every client out). Secret files
    are made readable by their owner only. Returns the files written.
    """
    base = Path(directory)
    wanted = [parse_client(c) for c in clients] if clients else [AllowedKey(r, r) for r in ROLES]
    names = [c.name for c in wanted]
    if len(set(names)) != len(names):
        raise ConfigError(f"client names must differ: {', '.join(names)}")
    for name in (SERVER, *names):
        for suffix in (".key", ".key_secret"):
            if (base / f"{name}{suffix}").exists():
                raise ConfigError(f"{base / (name + suffix)} exists: framepipe never overwrites keys")
    base.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    public, secret = zmq.auth.create_certificates(base, SERVER)
    os.chmod(secret, 0o600)
    written += [Path(public), Path(secret)]
    for client in wanted:
        public, secret = zmq.auth.create_certificates(base, client.name)
        os.chmod(secret, 0o600)
        allowed = base / ALLOWED_DIR / client.role
        allowed.mkdir(parents=True, exist_ok=True)
        shutil.copy(public, allowed / f"{client.name}.key")
        written += [Path(public), Path(secret), allowed / f"{client.name}.key"]
    return written
