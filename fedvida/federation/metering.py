"""Bytes on the wire, counted from the serialized messages.

Flower 1.39 serializes a message as a tree of objects (RecordDict -> records -> Array ->
ArrayChunk), each deflated to bytes and stored by content id in the SuperLink's object store.
The size of a message is therefore the sum of ``len(obj.deflate())`` over the distinct objects
of its tree (an object that occurs twice, e.g. two identical zero tensors, travels once).
Message metadata and gRPC framing are not counted (docs/federation.md, "Cross-check on the
wire", compares the count with the TCP bytes a relay measures in the TLS deployment test).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flwr.app import Message

from fedvida.federation.flower_compat import drop_chunk_cache


def object_tree_bytes(obj: Any, seen: set[str] | None = None) -> int:
    """Serialized size of a Flower record object and everything below it.

    Parameters
    ----------
    obj
        A ``RecordDict``, ``ArrayRecord``, ``MetricRecord``, ``ConfigRecord`` or ``Array``.
    seen
        Object ids already counted (shared between calls to count a message once).

    Returns
    -------
    int
        Bytes of the deflated objects, each distinct object counted once.
    """
    seen = set() if seen is None else seen
    oid = obj.object_id
    if oid in seen:
        return 0
    seen.add(oid)
    total = len(obj.deflate())
    for child in (obj.children or {}).values():
        total += object_tree_bytes(child, seen)
    # Counting sliced each Array into ArrayChunks (memoryviews of its data) and cached them in
    # the Array; drop that cache so that a message metered before it is sent does not carry its
    # payload twice where it is pickled (Ray's simulation transport serialized 10.4 MB instead
    # of 5.2 MB per 5.2 MB model). Flower rebuilds the chunks when it needs them.
    drop_chunk_cache(obj)
    return total


def message_bytes(msg: Message) -> int:
    """Serialized payload size of one message (content tree, or the error reason)."""
    if msg.has_error():
        return len(str(msg.error.reason).encode())
    return object_tree_bytes(msg.content)


@dataclass
class Traffic:
    """Bytes sent to (down) and received from (up) clients, per message type."""

    down: int = 0
    up: int = 0
    messages_down: int = 0
    messages_up: int = 0
    per_client_up: dict[int, int] = field(default_factory=dict)

    def add_down(self, nbytes: int) -> None:
        self.down += nbytes
        self.messages_down += 1

    def add_up(self, client: int, nbytes: int) -> None:
        self.up += nbytes
        self.messages_up += 1
        self.per_client_up[client] = self.per_client_up.get(client, 0) + nbytes

    def merge(self, other: Traffic) -> None:
        self.down += other.down
        self.up += other.up
        self.messages_down += other.messages_down
        self.messages_up += other.messages_up
        for k, v in other.per_client_up.items():
            self.per_client_up[k] = self.per_client_up.get(k, 0) + v
