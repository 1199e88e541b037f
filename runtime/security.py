"""CURVE on TCP links: the keys directory, secured sockets, refused peers logged and counted.

On ipc the run directory (mode 0700) is the access control and sockets stay plain. On TCP
every server socket (``curve_server``) accepts only clients whose public key is in
``<keys>/authorized/``; every client pins the server's public key. A ZAP handler (pyzmq's
:class:`~zmq.auth.thread.ThreadAuthenticator`) runs in each process that binds, started
before the first bind so that no connection is ever accepted unauthenticated. Refused
handshakes are read from socket monitors and counted by link and reason.

Keys directory (``stratrun keys generate``)::

    server.key  server.key_secret     the servers' pair (broker, aggregator, manager)
    client.key  client.key_secret     the clients' pair (workers, CLI, children)
    authorized/client.key             public keys allowed to connect (add more to allow more)
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import parse_monitor_message

from runtime.transport import MAX_BYTES, MAX_FRAME_BYTES, RejectCounter, open_socket

__all__ = [
    "CurveKeys",
    "KeysError",
    "Security",
    "generate_keys",
]

_AUTHORIZED = "authorized"
_REFUSALS: dict[int, str] = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "unauthorised",  # ZAP said no: unknown client key
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "handshake",  # no CURVE, wrong server key, garbage
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake",
}
_LOG_EVERY_S = 10.0  # refusals are logged once per link and reason in this period


class KeysError(Exception):
    """The keys directory is missing, incomplete or has loose file modes."""


def generate_keys(directory: str | Path, *, force: bool = False) -> list[Path]:
    """Make the server and client key pairs in ``directory`` (0700, secrets 0600).

    The client's public key is authorised at once. Existing keys are kept unless ``force``.
    """
    root = Path(directory).expanduser().resolve()
    if (root / "server.key_secret").exists() and not force:
        raise KeysError(f"{root} already holds keys (use --force to replace them)")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    root.chmod(0o700)
    authorized = root / _AUTHORIZED
    authorized.mkdir(mode=0o700, exist_ok=True)
    made: list[Path] = []
    old = os.umask(0o077)  # the secret file is never readable by others, not even briefly
    try:
        for name in ("server", "client"):
            public, secret = zmq.auth.create_certificates(str(root), name)
            made += [Path(public), Path(secret)]
    finally:
        os.umask(old)
    for path in made:
        path.chmod(0o600 if path.name.endswith("_secret") else 0o644)
    shutil.copyfile(root / "client.key", authorized / "client.key")
    (authorized / "client.key").chmod(0o644)
    made.append(authorized / "client.key")
    return made


def _secret(path: Path) -> tuple[bytes, bytes]:
    if not path.is_file():
        raise KeysError(f"{path}: no such key file (run: stratrun keys generate)")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeysError(f"{path}: mode {mode:04o} lets others read a secret key; chmod 600 it")
    public, secret = zmq.auth.load_certificate(str(path))
    if secret is None:
        raise KeysError(f"{path}: holds no secret key")
    return public, secret


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """The keys one process needs: the server pair (if it binds), the client pair, and the
    public keys of authorised clients (z85)."""

    server_public: bytes
    server_secret: bytes | None
    client_public: bytes
    client_secret: bytes
    authorized: frozenset[bytes]

    @classmethod
    def load(cls, directory: str | Path, *, server: bool = True) -> CurveKeys:
        """Read a keys directory; secret files must not be readable by group or others."""
        root = Path(directory)
        if not root.is_dir():
            raise KeysError(f"{root}: no keys directory (run: stratrun keys generate --dir {root})")
        client_public, client_secret = _secret(root / "client.key_secret")
        if server:
            server_public, server_secret = _secret(root / "server.key_secret")
        else:
            server_public, _ = zmq.auth.load_certificate(str(root / "server.key"))
            server_secret = None
        authorized: set[bytes] = set()
        folder = root / _AUTHORIZED
        if folder.is_dir():
            for path in sorted(folder.glob("*.key")):
                public, _ = zmq.auth.load_certificate(str(path))
                authorized.add(public)
        return cls(
            server_public, server_secret, client_public, client_secret, frozenset(authorized)
        )


class Security:
    """Opens every socket of one process; CURVE when ``keys`` is given, plain otherwise.

    Server sockets are named by their link (``market_data``, ``events``, ``history``, ...)
    so that refused handshakes are counted in ``rejects`` as ``(link, reason)``. Call
    :meth:`close` before the context is terminated.
    """

    def __init__(
        self,
        ctx: zmq.Context[Any],
        keys: CurveKeys | None,
        rejects: RejectCounter,
        log: logging.Logger,
    ) -> None:
        self._ctx = ctx
        self.keys = keys
        self.rejects = rejects
        self._log = log
        self._auth: ThreadAuthenticator | None = None
        self._monitors: list[tuple[str, zmq.Socket[Any]]] = []
        self._watch: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._last_logged: dict[tuple[str, str], float] = {}

    @property
    def enabled(self) -> bool:
        return self.keys is not None

    def server(self, kind: int, link: str, *, bind: str, **options: Any) -> zmq.Socket[Any]:
        """A socket bound to ``bind``; on TCP only authorised clients get through."""
        options.setdefault("max_bytes", MAX_BYTES.get(link, MAX_FRAME_BYTES))
        if self.keys is None:
            return open_socket(self._ctx, kind, bind=bind, **options)
        keys = self.keys
        if keys.server_secret is None:
            raise KeysError("this process has no server key but binds a socket")
        self._start_auth()

        def configure(sock: zmq.Socket[Any]) -> None:
            sock.curve_secretkey = keys.server_secret
            sock.curve_publickey = keys.server_public
            sock.curve_server = True
            sock.setsockopt(zmq.ZAP_DOMAIN, b"stratrun")
            self._monitor(sock, link)

        return open_socket(self._ctx, kind, bind=bind, configure=configure, **options)

    def client(
        self, kind: int, link: str, *, connect: str | None = None, **options: Any
    ) -> zmq.Socket[Any]:
        """A socket connecting to ``connect``; on TCP it proves its key and pins the server's."""
        options.setdefault("max_bytes", MAX_BYTES.get(link, MAX_FRAME_BYTES))
        configure = _client_configure(self.keys) if self.keys is not None else None
        return open_socket(self._ctx, kind, connect=connect, configure=configure, **options)

    # -- the ZAP credentials provider (called in the authenticator's thread) --------

    def callback(self, domain: str, key: bytes) -> bool:
        """Allow a client whose public key (z85) is authorised; log the others."""
        assert self.keys is not None
        if key in self.keys.authorized:
            return True
        self._note("curve", f"unknown client key {key.decode(errors='replace')}")
        return False

    # -- monitors: refused handshakes, counted --------------------------------------

    def _start_auth(self) -> None:
        if self._auth is not None:
            return
        auth = ThreadAuthenticator(self._ctx, log=logging.getLogger("stratrun.zap"))
        auth.start()
        auth.configure_curve_callback(domain="stratrun", credentials_provider=self)
        self._auth = auth

    def _monitor(self, sock: zmq.Socket[Any], link: str) -> None:
        events = 0
        for event in _REFUSALS:
            events |= event
        monitor = sock.get_monitor_socket(events)
        with self._lock:
            self._monitors.append((link, monitor))
        if self._watch is None:
            self._watch = threading.Thread(target=self._read_monitors, daemon=True)
            self._watch.start()

    def _read_monitors(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                monitors = list(self._monitors)
            poller = zmq.Poller()
            for _, monitor in monitors:
                poller.register(monitor, zmq.POLLIN)
            ready = dict(poller.poll(100))
            for link, monitor in monitors:
                if monitor not in ready:
                    continue
                while True:
                    try:
                        frames = monitor.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    except zmq.ZMQError:
                        break
                    event = parse_monitor_message(frames)
                    reason = _REFUSALS.get(event["event"])
                    if reason is not None:
                        self.rejects.add(link, reason)
                        self._note(link, reason)
        with self._lock:
            for _, monitor in self._monitors:
                monitor.close(linger=0)
            self._monitors.clear()

    def _note(self, link: str, what: str) -> None:
        now = time.monotonic()
        key = (link, what)
        if now - self._last_logged.get(key, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._last_logged[key] = now
            self._log.warning("refused a connection on %s: %s", link, what)

    def close(self) -> None:
        """Stop the authenticator and the monitor thread (before the context ends)."""
        self._stopping.set()
        if self._watch is not None:
            self._watch.join(timeout=2)
            self._watch = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


def _client_configure(keys: CurveKeys) -> Callable[[zmq.Socket[Any]], None]:
    def configure(sock: zmq.Socket[Any]) -> None:
        sock.curve_secretkey = keys.client_secret
        sock.curve_publickey = keys.client_public
        sock.curve_serverkey = keys.server_public

    return configure
