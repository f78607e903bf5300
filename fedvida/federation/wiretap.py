"""A loopback TCP relay that counts the bytes on the wire in each direction.

Flower 1.39's SuperLink keeps no traffic counter, so the byte counts fedvida meters from the
serialized messages (``metering.py``) are cross-checked on the wire: SuperNodes connect to a
`WireTap` listening on ``127.0.0.1:<port>``, which relays every byte unchanged to the SuperLink's
Fleet API and counts them. TLS stays end to end (the tap never decrypts; the SuperLink
certificate's SAN ``127.0.0.1`` still matches), so the counts include TLS records, HTTP/2 and
gRPC framing, heartbeats and polls on top of the message payloads.

Directions: **up** = client to target (SuperNode to SuperLink), **down** = target to client.
The tap listens on loopback only, accepts at most ``max_connections`` at a time and stops by
itself after ``max_seconds``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass

CHUNK = 64 * 1024
ACCEPT_POLL_S = 0.2


@dataclass(frozen=True)
class ConnectionCount:
    """Bytes relayed over one client connection."""

    conn_id: int
    peer: str
    up: int
    down: int
    open: bool


@dataclass(frozen=True)
class TapCounts:
    """A consistent snapshot of a `WireTap`'s counters."""

    up: int
    down: int
    connections: int
    refused: int
    failed: int
    open: int
    per_connection: tuple[ConnectionCount, ...]


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) to ``(host, port)``; a one-line ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"address '{text}': expected HOST:PORT")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Conn:
    """One relayed connection: the client socket, the target socket and their counters."""

    def __init__(self, conn_id: int, client: socket.socket, target: socket.socket,
                 peer: str) -> None:
        self.conn_id, self.client, self.target, self.peer = conn_id, client, target, peer
        self.up = self.down = 0
        self.pumps_left = 2

    def count(self) -> ConnectionCount:
        return ConnectionCount(self.conn_id, self.peer, self.up, self.down, self.pumps_left > 0)


class WireTap:
    """Threaded TCP relay ``listen -> target`` counting bytes per connection and in total.

    Parameters
    ----------
    target
        ``(host, port)`` to forward to (e.g. the SuperLink's Fleet API).
    listen
        ``(host, port)`` to listen on; the host must be loopback, port 0 picks a free port
        (read it from `address` after `start`).
    max_connections
        Connections relayed at the same time; further ones are closed at once (counted as
        ``refused``; a client whose target cannot be reached is counted as ``failed``).
    max_seconds
        The tap stops by itself (closing every connection) this long after `start`.
    keep_closed
        Closed connections whose counts `snapshot` still lists (the totals keep everything).

    Examples
    --------
    >>> with WireTap(("127.0.0.1", 9092)) as tap:  # doctest: +SKIP
    ...     connect_clients_to(tap.address)
    ...     print(tap.snapshot().up, tap.snapshot().down)
    """

    def __init__(self, target: tuple[str, int], listen: tuple[str, int] = ("127.0.0.1", 0),
                 *, max_connections: int = 64, max_seconds: float = 3600.0,
                 keep_closed: int = 256) -> None:
        if not is_loopback(listen[0]):
            raise ValueError(f"listen address '{listen[0]}': the tap listens on loopback only")
        if max_connections < 1 or max_seconds <= 0:
            raise ValueError("max_connections must be >= 1 and max_seconds > 0")
        self.target, self._listen = target, listen
        self.max_connections, self.max_seconds = max_connections, max_seconds
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self._open: dict[int, _Conn] = {}
        self._closed: deque[ConnectionCount] = deque(maxlen=keep_closed)
        self._up = self._down = self._accepted = self._refused = self._failed = 0
        self._address: tuple[str, int] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the tap listens on (after `start`)."""
        if self._address is None:
            raise RuntimeError("the tap is not started")
        return self._address

    @property
    def running(self) -> bool:
        """Whether the tap still accepts connections."""
        return self._accept_thread is not None and not self._stop.is_set()

    def start(self) -> WireTap:
        """Bind, listen and relay in background threads; returns ``self``."""
        if self._server is not None:
            raise RuntimeError("the tap was already started")
        family = socket.AF_INET6 if ":" in self._listen[0] else socket.AF_INET
        server = socket.socket(family, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(self._listen)
        server.listen(self.max_connections)
        server.settimeout(ACCEPT_POLL_S)
        self._server = server
        self._address = (self._listen[0], int(server.getsockname()[1]))
        self._accept_thread = threading.Thread(target=self._accept_loop, name="wiretap-accept",
                                               daemon=True)
        self._accept_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> TapCounts:
        """Stop accepting, close every connection, join the threads; returns the final counts."""
        self._stop.set()
        accept = self._accept_thread
        if accept is not None and accept is not threading.current_thread():
            accept.join(timeout)
        self._close_all()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        return self.snapshot()

    def snapshot(self) -> TapCounts:
        """Totals and per-connection counts at this instant (thread-safe)."""
        with self._lock:
            per = [*self._closed, *(c.count() for c in self._open.values())]
            return TapCounts(self._up, self._down, self._accepted, self._refused, self._failed,
                             len(self._open), tuple(sorted(per, key=lambda c: c.conn_id)))

    def __enter__(self) -> WireTap:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._server is not None
        deadline = time.monotonic() + self.max_seconds
        try:
            while not self._stop.is_set():
                if time.monotonic() >= deadline:
                    self._stop.set()
                    self._close_all()
                    break
                try:
                    client, peer = self._server.accept()
                except TimeoutError:
                    continue
                except OSError:
                    break
                self._relay(client, f"{peer[0]}:{peer[1]}")
        finally:
            self._server.close()

    def _relay(self, client: socket.socket, peer: str) -> None:
        with self._lock:
            full = len(self._open) >= self.max_connections
            if full:
                self._refused += 1
        if full:
            client.close()
            return
        try:
            target = socket.create_connection(self.target, timeout=10)
        except OSError:
            with self._lock:
                self._failed += 1
            client.close()
            return
        for sock in (client, target):
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            conn = _Conn(self._accepted, client, target, peer)
            self._accepted += 1
            self._open[conn.conn_id] = conn
            pumps = [threading.Thread(target=self._pump, args=(conn, up), daemon=True,
                                      name=f"wiretap-{conn.conn_id}-{'up' if up else 'down'}")
                     for up in (True, False)]
            self._threads = [t for t in self._threads if t.is_alive()] + pumps
        for thread in pumps:
            thread.start()

    def _pump(self, conn: _Conn, up: bool) -> None:
        """Copy one direction until EOF or error, then half-close the other side."""
        src, dst = (conn.client, conn.target) if up else (conn.target, conn.client)
        how = socket.SHUT_WR  # clean EOF: half-close, the other direction may still be busy
        try:
            while True:
                data = src.recv(CHUNK)
                if not data:
                    break
                dst.sendall(data)
                with self._lock:
                    if up:
                        conn.up += len(data)
                        self._up += len(data)
                    else:
                        conn.down += len(data)
                        self._down += len(data)
        except OSError:  # reset or closed by `stop`: end both directions
            how = socket.SHUT_RDWR
        for sock in (dst,) if how == socket.SHUT_WR else (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(how)
        with self._lock:
            conn.pumps_left -= 1
            done = conn.pumps_left == 0
            if done:
                self._open.pop(conn.conn_id, None)
                self._closed.append(conn.count())
        if done:
            conn.client.close()
            conn.target.close()

    def _close_all(self) -> None:
        with self._lock:
            conns = list(self._open.values())
        for conn in conns:
            for sock in (conn.client, conn.target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
