"""The loopback relay of the wire cross-check: exact byte counts, both directions, bounds."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from fedvida.federation.wiretap import WireTap, is_loopback, parse_address

REPLY_FACTOR = 3  # the test server answers every byte with 3 bytes: up and down differ


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    """A loopback TCP server: reads until the client half-closes, replies 3x what it got."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            received = bytearray()
            while chunk := conn.recv(65536):
                received += chunk
            conn.sendall(bytes(received) * REPLY_FACTOR)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[:2]
    stop.set()
    thread.join(5)
    listener.close()


def _exchange(address: tuple[str, int], payload: bytes) -> bytes:
    """Send ``payload``, half-close, read the whole reply."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        reply = bytearray()
        while chunk := sock.recv(65536):
            reply += chunk
        return bytes(reply)


def _wait_closed(tap: WireTap, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while tap.snapshot().open and time.monotonic() < deadline:
        time.sleep(0.01)


def test_counts_are_exact_in_each_direction_and_per_connection(
    server: tuple[str, int],
) -> None:
    # Arrange: three payloads of different sizes (one larger than the relay's chunk)
    sizes = [1, 70_001, 300_000]
    payloads = [os.urandom(n) for n in sizes]
    # Act
    with WireTap(server) as tap:
        replies = [_exchange(tap.address, p) for p in payloads]
        _wait_closed(tap)
        counts = tap.snapshot()
    # Assert: bytes relayed unchanged, and counted exactly
    assert replies == [p * REPLY_FACTOR for p in payloads]
    assert counts.up == sum(sizes)
    assert counts.down == REPLY_FACTOR * sum(sizes)
    assert (counts.connections, counts.open, counts.refused, counts.failed) == (3, 0, 0, 0)
    assert [(c.up, c.down, c.open) for c in counts.per_connection] == [
        (n, REPLY_FACTOR * n, False) for n in sizes]
    assert not tap.running


def test_concurrent_connections_sum_exactly(server: tuple[str, int]) -> None:
    # Arrange
    sizes = [10_000 * (k + 1) for k in range(8)]
    replies: dict[int, bytes] = {}
    # Act: eight clients at once through one tap
    with WireTap(server) as tap:
        threads = [threading.Thread(target=lambda k=k: replies.__setitem__(
            k, _exchange(tap.address, bytes([k]) * sizes[k]))) for k in range(len(sizes))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        _wait_closed(tap)
        counts = tap.stop()
    # Assert
    assert all(replies[k] == bytes([k]) * sizes[k] * REPLY_FACTOR for k in range(len(sizes)))
    assert (counts.up, counts.down) == (sum(sizes), REPLY_FACTOR * sum(sizes))
    assert sorted(c.up for c in counts.per_connection) == sizes


def test_connection_limit_refuses_and_lifetime_stops_the_tap(server: tuple[str, int]) -> None:
    # Arrange: one connection allowed, half a second of life
    tap = WireTap(server, max_connections=1, max_seconds=0.5).start()
    held = socket.create_connection(tap.address, timeout=5)
    held.sendall(b"x")
    deadline = time.monotonic() + 5
    while tap.snapshot().open < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    # Act: a second connection while the first is open, then wait past the lifetime
    with socket.create_connection(tap.address, timeout=5) as second:
        assert second.recv(1) == b""  # closed at once by the tap
    time.sleep(1.0)
    # Assert: refused once; the held connection was closed when the tap stopped by itself
    assert held.recv(10) == b""
    held.close()
    counts = tap.stop()
    assert not tap.running
    assert (counts.connections, counts.refused, counts.failed, counts.up, counts.open) == (
        1, 1, 0, 1, 0)
    with pytest.raises(OSError):
        socket.create_connection(tap.address, timeout=1).close()


def test_unreachable_target_closes_the_client_and_is_counted() -> None:
    # Arrange: a port nobody listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[:2]
    # Act
    with WireTap(dead) as tap:
        with socket.create_connection(tap.address, timeout=5) as sock:
            assert sock.recv(1) == b""
        counts = tap.snapshot()
    # Assert
    assert (counts.connections, counts.failed, counts.up, counts.down) == (0, 1, 0, 0)


def test_listens_on_loopback_only_and_parses_addresses() -> None:
    assert parse_address("127.0.0.1:9092") == ("127.0.0.1", 9092)
    assert parse_address("[::1]:80") == ("::1", 80)
    assert is_loopback("localhost") and is_loopback("127.0.0.2") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5")
    for bad in ("9092", "host:", "host:http", "h:70000"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_address(bad)
    with pytest.raises(ValueError, match="loopback only"):
        WireTap(("127.0.0.1", 9092), ("0.0.0.0", 0))
