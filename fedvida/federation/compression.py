"""Compression of the model arrays on the wire (Flower wiring of `fedvida.federation.codecs`).

``communication.uplink`` shrinks what clients send back, ``communication.downlink: float16``
what the server broadcasts. Both are lossy; the point of this module is to make the loss small,
bounded and accounted for:

* **the uplink carries the update, not the weights**: a client sends ``w_local - w_received``
  and the server adds it back to the float32 global model it broadcast. Updates are small and
  centred on zero, so a per-tensor int8 grid or a top-k selection spends its precision where the
  change is; the same grid over the weights would round away every change smaller than half a
  step (with float16, a 1e-4 step on a weight of 1.0 is below half of float16's spacing there,
  9.8e-4, and vanishes; in the update it keeps 3 significant digits). float16 therefore sends
  the update too. The server's global model stays float32: the decoded update is added to the
  exact broadcast weights, so compression error never compounds in the global model.
* **error feedback** (``communication.error_feedback``): what the codec dropped this round (the
  residual ``c - decode(encode(c))`` of the corrected update ``c = update + previous residual``)
  is kept in the node's Flower ``Context.state`` and added to its next update, so over rounds
  the sum of what was sent plus the residual equals the sum of the updates (top-k's unsent
  entries are delayed, not lost). The residual never leaves the node. It is kept per method,
  and also in the node's own files (`fedvida.federation.nodestate`), so that ``--resume``
  (a new run with an empty ``Context.state``) continues it.
* **the downlink carries float16 weights**: a client may not have seen the previous global model
  (sampling), so the server cannot send a difference; float16 halves the bytes and perturbs the
  client's starting point by at most 2^-11 relative per entry, while the server keeps the exact
  float32 global model.

Ordering with DP: `compression_mod` is the outermost client mod. On the way in it decodes the
downlink, so the DP mod and the handler see float32 arrays; on the way out the DP mod clips
(and for local DP, noises) the *uncompressed* update first, then this mod encodes. When the
server asks clients to clip (Flower's client-side wrappers send ``clipping_norm``), the update
that is actually sent (with the error-feedback residual added and the codec's rounding) is
rescaled to that norm, so the bound the central noise is calibrated for still holds; what the
rescaling removed stays in the residual.

The codecs themselves (and the wire format of encoded arrays, ``k::<part>``) are pure numpy, in
`fedvida.federation.codecs`; this module is the Flower wiring: the instruction's codec keys
(`CodecSettings`), the server's broadcast encoding and reply decoding, and the client mod.

The server decodes replies as they are aggregated (`decode_replies`, called by
`fedvida.federation.rounds.run_round` before the strategy), after they were metered as they
arrived: bytes up are the compressed bytes; the strategy and any DP wrapper see float32 arrays
with the shared keys.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType

from fedvida.config import CommunicationConfig
from fedvida.federation import records as R
from fedvida.federation.codecs import (
    DOWNLINK_CODECS,
    UPLINK_CODECS,
    Arrays,
    CodecError,
    compress_update,
    decode,
    encode_weights,
    is_encoded,
)
from fedvida.federation.flower_compat import CLIPPING_NORM_KEY
from fedvida.federation.keys import (
    CFG_DOWNLINK,
    CFG_FEEDBACK,
    CFG_TOPK,
    CFG_UPLINK,
    residual_key,
)

_log = logging.getLogger("fedvida.compression")



# --- the instruction: which codec a run uses -------------------------------------------------

@dataclass(frozen=True)
class CodecSettings:
    """The codec settings an instruction carries (``communication.*``)."""

    uplink: str = "none"
    downlink: str = "none"
    topk_fraction: float = 0.1
    error_feedback: bool = True

    @classmethod
    def from_config(cls, comm: CommunicationConfig) -> CodecSettings:
        return cls(comm.uplink, comm.downlink, comm.topk_fraction, comm.error_feedback)

    @property
    def active(self) -> bool:
        return self.uplink != "none" or self.downlink != "none"

    def instruction(self) -> dict[str, str | float | bool]:
        """ConfigRecord entries of a train/evaluate instruction ({} when nothing is compressed)."""
        if not self.active:
            return {}
        return {CFG_UPLINK: self.uplink, CFG_DOWNLINK: self.downlink,
                CFG_TOPK: float(self.topk_fraction), CFG_FEEDBACK: bool(self.error_feedback)}

    @classmethod
    def from_instruction(cls, conf: ConfigRecord | None) -> CodecSettings | None:
        """The codec an instruction asks for, or None (no codec keys: pass through)."""
        if conf is None or (CFG_UPLINK not in conf and CFG_DOWNLINK not in conf):
            return None
        uplink = str(conf.get(CFG_UPLINK, "none"))
        downlink = str(conf.get(CFG_DOWNLINK, "none"))
        if uplink not in UPLINK_CODECS:
            raise CodecError(f"communication.uplink: unknown codec {uplink!r} sent by the server")
        if downlink not in DOWNLINK_CODECS:
            raise CodecError(f"communication.downlink: unknown codec {downlink!r}")
        fraction = float(conf.get(CFG_TOPK, 0.1))  # type: ignore[arg-type]
        if not 0.0 < fraction <= 1.0:
            raise CodecError(f"communication.topk_fraction: {fraction} is not in (0, 1]")
        return cls(uplink, downlink, fraction, bool(conf.get(CFG_FEEDBACK, True)))


def instruction_keys(comm: CommunicationConfig) -> dict[str, str | float | bool]:
    """The codec keys the server adds to every train/evaluate ConfigRecord of a run."""
    return CodecSettings.from_config(comm).instruction()


def describe(comm: CommunicationConfig, shared_prefixes: Iterable[str]) -> dict[str, Any]:
    """The ``communication`` entry of a metrics.jsonl line: codecs and the shared model parts."""
    out: dict[str, Any] = {"uplink": comm.uplink, "downlink": comm.downlink,
                           "shared_prefixes": list(shared_prefixes)}
    if comm.uplink == "topk":
        out["topk_fraction"] = comm.topk_fraction
    if comm.uplink != "none":
        out["error_feedback"] = comm.error_feedback
    return out


# --- server side -----------------------------------------------------------------------------

def compress_broadcast(messages: Iterable[Message]) -> list[Message]:
    """Encode the arrays of instructions whose config asks for a downlink codec (in place).

    Flower's strategies give every sampled node the same ``RecordDict``, so the arrays are
    encoded once per distinct content.
    """
    msgs = list(messages)
    done: set[int] = set()
    for msg in msgs:
        content = msg.content
        if id(content) in done:
            continue
        done.add(id(content))
        codec = CodecSettings.from_instruction(content.config_records.get(R.CONFIG_KEY))
        record = content.array_records.get(R.ARRAYS_KEY)
        if codec is None or codec.downlink == "none" or record is None:
            continue
        content[R.ARRAYS_KEY] = R.numpy_to_arrays(
            encode_weights(R.arrays_to_numpy(record), codec.downlink))
    return msgs


def decode_replies(
    replies: Iterable[Message], reference: ArrayRecord, node_to_partition: Mapping[int, int]
) -> tuple[list[Message], list[tuple[int, str]]]:
    """Decode encoded train replies in place, relative to the broadcast ``reference``.

    Returns
    -------
    tuple
        The replies to aggregate (errors and plain replies unchanged) and ``(partition,
        reason)`` for each reply that could not be decoded (left out of the aggregate).
    """
    ref: Arrays | None = None
    out: list[Message] = []
    problems: list[tuple[int, str]] = []
    for reply in replies:
        if reply.has_error():
            out.append(reply)
            continue
        try:
            for name, record in list(reply.content.array_records.items()):
                if not is_encoded(record.keys()):
                    continue
                ref = R.arrays_to_numpy(reference) if ref is None else ref
                reply.content[name] = R.numpy_to_arrays(decode(R.arrays_to_numpy(record), ref))
        except CodecError as exc:
            part = node_to_partition.get(reply.metadata.src_node_id, -1)
            problems.append((part, f"undecodable compressed update: {exc}"))
            continue
        out.append(reply)
    return out, problems


# --- client side: the mod --------------------------------------------------------------------

def _residual_key(conf: ConfigRecord) -> str:
    return residual_key(str(conf.get(R.CFG_METHOD, "")))


def _node_run(conf: ConfigRecord, context: Context) -> tuple[Any, int, int] | None:
    """(config, partition, round) of an instruction that names a run (None: it does not)."""
    if R.CFG_YAML not in conf or R.CFG_ROUND not in conf:
        return None
    from fedvida.federation.node import instruction_config
    from fedvida.federation.run_config import partition_of

    cfg = instruction_config(conf, context.node_config)
    return cfg, partition_of(context.node_config), int(conf[R.CFG_ROUND])  # type: ignore[arg-type]


def _reload(conf: ConfigRecord, context: Context) -> Arrays:
    """The residual a resumed run's node left on disk (empty in a fresh run)."""
    from fedvida.federation import nodestate

    run = _node_run(conf, context)
    if run is None:
        return {}
    cfg, partition, server_round = run
    found = nodestate.load_state(cfg, context.node_config, partition, str(conf[R.CFG_METHOD]),
                                 nodestate.RESIDUAL, server_round)
    return found or {}


def _persist(conf: ConfigRecord, context: Context, residual: Arrays) -> None:
    from fedvida.federation import nodestate

    run = _node_run(conf, context)
    if run is not None:
        cfg, partition, server_round = run
        nodestate.save_state(cfg, context.node_config, partition, str(conf[R.CFG_METHOD]),
                             nodestate.RESIDUAL, server_round, residual)


def _failure(exc: Exception) -> Exception:
    from fedvida.federation.node import ClientFailure

    _log.error("compression failed: %s", exc)
    return ClientFailure(R.sanitize_reason(f"{type(exc).__name__}: {exc}"))


def compression_mod(msg: Message, context: Context, call_next: Any) -> Message:
    """Client mod: decode the downlink, encode the uplink update, keep the residual locally.

    A no-op unless the instruction's ConfigRecord carries the codec keys (`instruction_keys`).
    Must be the outermost mod (``@app.train(mods=[compression_mod, dp_mod])``): the mods inside
    it see float32 arrays, and the update it encodes is the one they clipped or noised.
    """
    conf = msg.content.config_records.get(R.CONFIG_KEY)
    received: Arrays | None = None
    try:
        codec = CodecSettings.from_instruction(conf)
        record = msg.content.array_records.get(R.ARRAYS_KEY)
        if codec is not None and record is not None:
            received = R.arrays_to_numpy(record)
            if is_encoded(received):
                received = decode(received)
                msg.content[R.ARRAYS_KEY] = R.numpy_to_arrays(received)
    except Exception as exc:
        raise _failure(exc) from None
    if codec is None or conf is None:
        return call_next(msg, context)
    reply = call_next(msg, context)
    if (codec.uplink == "none" or received is None or reply.has_error()
            or msg.metadata.message_type != MessageType.TRAIN
            or R.ARRAYS_KEY not in reply.content.array_records):
        return reply
    try:
        key = _residual_key(conf)
        residual: Arrays | None = None
        if codec.error_feedback:
            stored = context.state.array_records.get(key)
            residual = R.arrays_to_numpy(stored) if stored is not None else _reload(conf, context)
        max_norm = conf.get(CLIPPING_NORM_KEY)
        packed = compress_update(
            R.arrays_to_numpy(reply.content.array_records[R.ARRAYS_KEY]), received,
            codec.uplink, codec.topk_fraction, residual,
            None if max_norm is None else float(max_norm),  # type: ignore[arg-type]
        )
        if codec.error_feedback:
            context.state[key] = R.numpy_to_arrays(packed.residual)
            _persist(conf, context, packed.residual)
    except Exception as exc:
        raise _failure(exc) from None
    reply.content[R.ARRAYS_KEY] = R.numpy_to_arrays(packed.arrays)
    return reply
