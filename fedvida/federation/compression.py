"""Compression of the model arrays on the wire: float16, int8 (per-tensor affine), top-k.

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

Wire format: the reply keeps one ``ArrayRecord`` "arrays"; an encoded tensor ``k`` travels as
derived keys ``k::<part>`` (`fedvida.federation.records.CODEC_SUFFIXES`, which
``records.check_reply`` accepts as shared keys), a tensor that cannot be encoded (not finite,
outside float16's range, not floating point) travels as its plain key with its value::

    k::f16                          float16 weights (downlink)
    k::d-f16                        float16 update
    k::d-i8, k::d-i8-affine         int8 codes of the update, float32 [scale, zero point]
    k::d-topk-idx, k::d-topk-val    int32 flat indices (ascending), float32 values of the update
    k::d-f32                        dense float32 update (top-k when k >= n/2: cheaper dense)

int8: ``x ~ (q - z) * s`` with ``s = (max(x, 0) - min(x, 0)) / 253`` and an integer zero point
``z``, so 0 is exact (a part that did not change costs no error) and every entry is within
``s/2`` of its value (253 steps leave room for the zero point's rounding inside [-128, 127]).
Top-k keeps ``ceil(fraction * n)`` entries of largest magnitude per tensor, exactly.

The server decodes replies as they are aggregated (`decode_replies`, called by
`fedvida.federation.rounds.run_round` before the strategy), after they were metered as they
arrived: bytes up are the compressed bytes; the strategy and any DP wrapper see float32 arrays
with the shared keys.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType

from fedvida.config import CommunicationConfig
from fedvida.federation import records as R
from fedvida.federation.records import CODEC_SEP

_log = logging.getLogger("fedvida.compression")

# ConfigRecord keys of a train/evaluate instruction (absent: the mod passes messages through)
CFG_UPLINK = "codec-uplink"
CFG_DOWNLINK = "codec-downlink"
CFG_TOPK = "codec-topk-fraction"
CFG_FEEDBACK = "codec-error-feedback"
CLIPPING_NORM_KEY = "clipping_norm"  # flwr.supercore.differential_privacy.KEY_CLIPPING_NORM
RESIDUAL_KEY = "fedvida-residual"  # Context.state record prefix (one record per method)

# derived key parts (records.CODEC_SUFFIXES lists them for the privacy boundary)
F16, D_F16, D_F32 = "f16", "d-f16", "d-f32"
D_I8, D_I8_AFFINE = "d-i8", "d-i8-affine"
D_TOPK_IDX, D_TOPK_VAL = "d-topk-idx", "d-topk-val"
_DELTA_PARTS = {D_F16: (D_F16,), D_F32: (D_F32,), D_I8: (D_I8, D_I8_AFFINE),
                D_TOPK_IDX: (D_TOPK_IDX, D_TOPK_VAL)}
_ALL_PARTS = R.CODEC_SUFFIXES  # == {F16, D_F16, D_F32, D_I8, D_I8_AFFINE, D_TOPK_IDX, ...}
INT8_STEPS = 253  # levels spanned by [min, max]: the rounded zero point keeps codes in int8

Arrays = dict[str, np.ndarray]


class CodecError(ValueError):
    """An encoded record that cannot be decoded (missing part, wrong shape, bad index)."""


# --- tensor codecs ---------------------------------------------------------------------------

def quantize_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-tensor affine int8: codes and ``[scale, zero_point]`` (float32), or None.

    None when the tensor is not finite or its range is too small (or large) for a normal float32
    scale; the caller then sends it uncompressed.

    Parameters
    ----------
    x
        A floating-point tensor.

    Returns
    -------
    tuple or None
        ``(codes int8 shaped like x, affine float32 [scale, zero_point])`` with
        ``|x - (codes - zero_point) * scale| <= scale / 2`` per entry (up to float32 rounding
        of the product).
    """
    x64 = np.asarray(x, dtype=np.float64)
    if x64.size == 0:
        return np.zeros(x64.shape, np.int8), np.array([1.0, 0.0], np.float32)
    if not np.isfinite(x64).all():
        return None
    lo, hi = min(float(x64.min()), 0.0), max(float(x64.max()), 0.0)
    if hi == lo:  # all zeros
        return np.zeros(x64.shape, np.int8), np.array([1.0, 0.0], np.float32)
    scale = np.float32((hi - lo) / INT8_STEPS)
    if not np.isfinite(scale) or scale < np.finfo(np.float32).tiny:
        return None
    s = float(scale)
    zero = float(np.rint(-lo / s) - 127.0)  # integer in [-127, 126]
    codes = np.clip(np.rint(x64 / s) + zero, -128, 127).astype(np.int8)
    return codes, np.array([s, zero], np.float32)


def dequantize_int8(codes: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Inverse of `quantize_int8`: ``(codes - zero_point) * scale`` as float32."""
    s, zero = (float(v) for v in np.asarray(affine, np.float64).reshape(-1)[:2])
    return ((codes.astype(np.float64) - zero) * s).astype(np.float32)


def topk_count(size: int, fraction: float) -> int:
    """Entries a top-k codec keeps of a tensor of ``size`` entries: ``ceil(fraction * size)``."""
    if size == 0:
        return 0
    return min(size, max(1, math.ceil(fraction * size - 1e-9)))


def topk_select(x: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The ``topk_count`` entries of largest magnitude: (int32 flat indices ascending, values)."""
    flat = np.asarray(x, np.float32).reshape(-1)
    k = topk_count(flat.size, fraction)
    if k == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.float32)
    top = np.argpartition(-np.abs(flat), k - 1)[:k] if k < flat.size else np.arange(flat.size)
    idx = np.sort(top).astype(np.int32)
    return idx, flat[idx].copy()


def topk_restore(idx: np.ndarray, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Dense float32 tensor of ``shape``: ``values`` at flat ``idx``, zeros elsewhere."""
    size = int(np.prod(shape, dtype=np.int64))
    idx = np.asarray(idx).reshape(-1)
    values = np.asarray(values).reshape(-1)
    if idx.shape != values.shape:
        raise CodecError(f"top-k: {idx.size} indices for {values.size} values")
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        raise CodecError("top-k: index outside the tensor")
    if idx.size > 1 and not (np.diff(idx.astype(np.int64)) > 0).all():
        raise CodecError("top-k: indices not strictly ascending (repeated or unordered)")
    out = np.zeros(size, np.float32)
    out[idx.astype(np.int64)] = values.astype(np.float32)
    return out.reshape(shape)


def _f16(x: np.ndarray) -> np.ndarray | None:
    """float16 copy, or None when an entry is not finite or outside float16's range."""
    if not np.isfinite(x).all():
        return None
    with np.errstate(over="ignore"):
        h = np.asarray(x).astype(np.float16)
    return h if np.isfinite(h).all() else None


def encode_delta(name: str, delta: np.ndarray, codec: str, fraction: float) -> Arrays | None:
    """Encode one tensor's update as derived arrays (``name::part``), or None if it cannot be.

    Parameters
    ----------
    name
        The tensor's key in the model state.
    delta
        The update (float32).
    codec
        ``"float16"``, ``"int8"`` or ``"topk"``.
    fraction
        Share of entries top-k keeps.
    """
    key = f"{name}{CODEC_SEP}"
    if not np.isfinite(delta).all():
        return None
    if codec == "float16":
        h = _f16(delta)
        return None if h is None else {key + D_F16: h}
    if codec == "int8":
        q = quantize_int8(delta)
        return None if q is None else {key + D_I8: q[0], key + D_I8_AFFINE: q[1]}
    if codec == "topk":
        if 2 * topk_count(delta.size, fraction) >= delta.size:  # dense is smaller
            return {key + D_F32: np.asarray(delta, np.float32)}
        idx, val = topk_select(delta, fraction)
        return {key + D_TOPK_IDX: idx, key + D_TOPK_VAL: val}
    raise CodecError(f"unknown uplink codec {codec!r}")


def _split(key: str) -> tuple[str, str]:
    base = R.shared_key(key)
    return (base, key[len(base) + len(CODEC_SEP):]) if base != key else (key, "")


def is_encoded(keys: Iterable[str]) -> bool:
    """True if any key is a derived (encoded) key."""
    return any(_split(k)[1] for k in keys)


def decode(arrays: Mapping[str, np.ndarray],
           reference: Mapping[str, np.ndarray] | None = None) -> Arrays:
    """Decode derived arrays back to tensors keyed by their plain names (float32 where encoded).

    Plain keys are taken as they are; ``k::f16`` is cast back to float32; an encoded update
    (``k::d-*``) is added to ``reference[k]`` (the weights it is relative to).

    Raises
    ------
    CodecError
        A part is missing or unknown, a tensor is given twice, shapes disagree, an update has
        no reference, or a top-k index is out of range or repeated.
    """
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        base, part = _split(key)
        parts = groups.setdefault(base, {})
        parts[part] = value
    out: Arrays = {}
    for base, parts in groups.items():
        kinds = set(parts)
        if kinds == {""}:
            out[base] = parts[""]
            continue
        if kinds == {F16}:
            out[base] = parts[F16].astype(np.float32)
            continue
        lead = [p for p in kinds if p in _DELTA_PARTS]
        if len(lead) != 1 or kinds != set(_DELTA_PARTS[lead[0]]):
            raise CodecError(f"'{base}': inconsistent encoded parts {sorted(kinds)}")
        if reference is None or base not in reference:
            raise CodecError(f"'{base}': an update without the weights it is relative to")
        ref = np.asarray(reference[base])
        kind = lead[0]
        if kind == D_TOPK_IDX:
            delta = topk_restore(parts[D_TOPK_IDX], parts[D_TOPK_VAL], ref.shape)
        else:
            value = parts[kind]
            if tuple(value.shape) != tuple(ref.shape):
                raise CodecError(f"'{base}': shape {value.shape}, expected {ref.shape}")
            if kind == D_I8:
                affine = parts[D_I8_AFFINE]
                if value.dtype != np.int8 or affine.size != 2:
                    raise CodecError(f"'{base}': int8 codes need int8 data and [scale, zero]")
                delta = dequantize_int8(value, affine)
            else:
                delta = value.astype(np.float32)
        out[base] = (ref.astype(np.float32) + delta).astype(np.float32)
    return out


def _delta_of(encoded: Arrays, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The update one tensor's derived arrays decode to (no reference added)."""
    decoded = decode(encoded, {name: np.zeros(shape, np.float32)})
    return decoded[name]


# --- updates: a client's whole reply ---------------------------------------------------------

@dataclass
class Compressed:
    """A compressed update: what travels, what stayed behind, and what the server will see."""

    arrays: Arrays
    residual: Arrays = field(default_factory=dict)
    sent: Arrays = field(default_factory=dict)  # decoded update per encoded tensor
    plain: list[str] = field(default_factory=list)  # tensors sent uncompressed (weights)
    rescaled: float = 1.0  # factor applied to meet ``max_norm`` (1.0: none needed)


def compress_update(
    weights: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    codec: str,
    fraction: float = 0.1,
    residual: Mapping[str, np.ndarray] | None = None,
    max_norm: float | None = None,
) -> Compressed:
    """Encode ``weights - reference`` (plus the error-feedback ``residual``) for the uplink.

    Parameters
    ----------
    weights
        The client's new values of the shared tensors.
    reference
        The weights the client received (what the server will add the update to).
    codec
        ``"float16"``, ``"int8"`` or ``"topk"``.
    fraction
        top-k: share of each tensor's entries sent.
    residual
        What earlier rounds did not send (None: no error feedback, nothing carried).
    max_norm
        If given, the L2 norm over all encoded updates is brought down to it after encoding
        (client-side DP clipping must hold for what is actually sent).

    Returns
    -------
    Compressed
        ``arrays`` to send; ``residual`` = corrected update minus what was sent (zero where a
        tensor went uncompressed, empty when ``residual`` is None).
    """
    arrays: Arrays = {}
    corrected: Arrays = {}
    sent: Arrays = {}
    plain: list[str] = []
    for name in sorted(weights):
        w = np.asarray(weights[name])
        ref = reference.get(name)
        if ref is None or w.dtype != np.float32 or tuple(np.shape(ref)) != w.shape:
            arrays[name] = w
            plain.append(name)
            continue
        c = w - np.asarray(ref, np.float32)
        if residual is not None and name in residual and residual[name].shape == c.shape:
            c = c + residual[name].astype(np.float32)
        enc = encode_delta(name, c, codec, fraction)
        if enc is None:  # not encodable: the weights (with the carried residual) as they are
            arrays[name] = (np.asarray(ref, np.float32) + c).astype(np.float32) \
                if np.isfinite(c).all() else w
            plain.append(name)
            continue
        arrays.update(enc)
        corrected[name] = c
        sent[name] = _delta_of(enc, name, c.shape)
    factor = 1.0
    if max_norm is not None and sent:
        arrays, sent, factor = _bound_norm(arrays, sent, float(max_norm))
    out_residual: Arrays = {}
    if residual is not None:
        out_residual = {k: (corrected[k] - sent[k]).astype(np.float32) for k in corrected}
    return Compressed(arrays, out_residual, sent, plain, factor)


def _norm(sent: Mapping[str, np.ndarray]) -> float:
    return math.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in sent.values()))


def _scale_encoded(arrays: Arrays, names: Iterable[str], gamma: float) -> Arrays:
    """Multiply the update encoded in ``arrays`` for ``names`` by ``gamma`` (< 1)."""
    out = dict(arrays)
    for name in names:
        key = f"{name}{CODEC_SEP}"
        if key + D_I8_AFFINE in out:  # scale the grid: codes and zero point are unchanged
            affine = out[key + D_I8_AFFINE].astype(np.float64)
            out[key + D_I8_AFFINE] = np.array([affine[0] * gamma, affine[1]], np.float32)
        for part in (D_TOPK_VAL, D_F32, D_F16):
            if key + part in out:
                value = out[key + part]
                out[key + part] = (value.astype(np.float64) * gamma).astype(value.dtype)
    return out


def _bound_norm(arrays: Arrays, sent: Arrays, max_norm: float) -> tuple[Arrays, Arrays, float]:
    """Rescale the encoded updates until the decoded update's L2 norm is at most ``max_norm``."""
    factor = 1.0
    for margin in (1e-6, 2e-3, 1e-2, 5e-2):  # float16 re-rounding may need a second pass
        norm = _norm(sent)
        if norm <= max_norm:
            return arrays, sent, factor
        gamma = max_norm / norm * (1.0 - margin)
        arrays = _scale_encoded(arrays, sent, gamma)
        factor *= gamma
        sent = {name: _delta_of({k: v for k, v in arrays.items()
                                 if k.startswith(f"{name}{CODEC_SEP}")}, name, sent[name].shape)
                for name in sent}
    if _norm(sent) > max_norm:  # a pathological float16 tensor (all subnormal): send nothing
        arrays = _scale_encoded(arrays, sent, 0.0)
        sent = {k: np.zeros_like(v) for k, v in sent.items()}
        factor = 0.0
    return arrays, sent, factor


def encode_weights(weights: Mapping[str, np.ndarray], codec: str) -> Arrays:
    """Downlink: ``float16`` weights as ``k::f16`` (tensors float16 cannot hold stay float32)."""
    if codec == "none":
        return dict(weights)
    if codec != "float16":
        raise CodecError(f"unknown downlink codec {codec!r}")
    out: Arrays = {}
    for name, w in weights.items():
        h = _f16(w) if np.asarray(w).dtype == np.float32 else None
        if h is None:
            out[name] = np.asarray(w)
        else:
            out[f"{name}{CODEC_SEP}{F16}"] = h
    return out


# --- the instruction: which codec a run uses -------------------------------------------------

@dataclass(frozen=True)
class Codec:
    """The codec settings an instruction carries (``communication.*``)."""

    uplink: str = "none"
    downlink: str = "none"
    topk_fraction: float = 0.1
    error_feedback: bool = True

    @classmethod
    def from_config(cls, comm: CommunicationConfig) -> Codec:
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
    def from_instruction(cls, conf: ConfigRecord | None) -> Codec | None:
        """The codec an instruction asks for, or None (no codec keys: pass through)."""
        if conf is None or (CFG_UPLINK not in conf and CFG_DOWNLINK not in conf):
            return None
        uplink = str(conf.get(CFG_UPLINK, "none"))
        downlink = str(conf.get(CFG_DOWNLINK, "none"))
        if uplink not in ("none", "float16", "int8", "topk"):
            raise CodecError(f"communication.uplink: unknown codec {uplink!r} sent by the server")
        if downlink not in ("none", "float16"):
            raise CodecError(f"communication.downlink: unknown codec {downlink!r}")
        fraction = float(conf.get(CFG_TOPK, 0.1))  # type: ignore[arg-type]
        if not 0.0 < fraction <= 1.0:
            raise CodecError(f"communication.topk_fraction: {fraction} is not in (0, 1]")
        return cls(uplink, downlink, fraction, bool(conf.get(CFG_FEEDBACK, True)))


def instruction_keys(comm: CommunicationConfig) -> dict[str, str | float | bool]:
    """The codec keys the server adds to every train/evaluate ConfigRecord of a run."""
    return Codec.from_config(comm).instruction()


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
        codec = Codec.from_instruction(content.config_records.get(R.CONFIG_KEY))
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
    return RESIDUAL_KEY + ":" + str(conf.get(R.CFG_METHOD, ""))


def _node_run(conf: ConfigRecord, context: Context) -> tuple[Any, int, int] | None:
    """(config, partition, round) of an instruction that names a run (None: it does not)."""
    if R.CFG_YAML not in conf or R.CFG_ROUND not in conf:
        return None
    from fedvida.federation.client import instruction_config
    from fedvida.federation.settings import partition_of

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
    from fedvida.federation.client import ClientFailure

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
        codec = Codec.from_instruction(conf)
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
