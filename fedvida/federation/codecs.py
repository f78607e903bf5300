"""Update and weight codecs on numpy arrays: float16, int8 (per-tensor affine), top-k.

Pure numpy, no Flower: `fedvida.federation.compression` wires these codecs into the messages
(the server's broadcast and decoding, the client mod) and documents the design (updates, not
weights, on the uplink; error feedback; float16 downlink; ordering with DP).

Wire format: an encoded tensor ``k`` travels as derived arrays ``k::<part>`` beside the plain
ones; `shared_key` maps a derived key back to ``k`` (``records.check_reply`` accepts it as a
shared key); a tensor that cannot be encoded (not finite, outside float16's range, not floating
point) travels as its plain key with its value::

    k::f16                          float16 weights (downlink)
    k::d-f16                        float16 update
    k::d-i8, k::d-i8-affine         int8 codes of the update, float32 [scale, zero point]
    k::d-topk-idx, k::d-topk-val    int32 flat indices (ascending), float32 values of the update
    k::d-f32                        dense float32 update (top-k when k >= n/2: cheaper dense)

int8: ``x ~ (q - z) * s`` with ``s = (max(x, 0) - min(x, 0)) / 253`` and an integer zero point
``z``, so 0 is exact (a part that did not change costs no error) and every entry is within
``s/2`` of its value (253 steps leave room for the zero point's rounding inside [-128, 127]).
Top-k keeps ``ceil(fraction * n)`` entries of largest magnitude per tensor, exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

CODEC_SEP = "::"
# derived key parts
F16, D_F16, D_F32 = "f16", "d-f16", "d-f32"
D_I8, D_I8_AFFINE = "d-i8", "d-i8-affine"
D_TOPK_IDX, D_TOPK_VAL = "d-topk-idx", "d-topk-val"
CODEC_SUFFIXES = frozenset({F16, D_F16, D_F32, D_I8, D_I8_AFFINE, D_TOPK_IDX, D_TOPK_VAL})
_DELTA_PARTS = {D_F16: (D_F16,), D_F32: (D_F32,), D_I8: (D_I8, D_I8_AFFINE),
                D_TOPK_IDX: (D_TOPK_IDX, D_TOPK_VAL)}
UPLINK_CODECS = ("none", "float16", "int8", "topk")
DOWNLINK_CODECS = ("none", "float16")
INT8_STEPS = 253  # levels spanned by [min, max]: the rounded zero point keeps codes in int8

Arrays = dict[str, np.ndarray]


def shared_key(key: str) -> str:
    """The tensor an array key stands for: ``k`` for ``k`` and for a derived ``k::<part>``."""
    base, sep, part = key.rpartition(CODEC_SEP)
    return base if sep and part in CODEC_SUFFIXES else key


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
    base = shared_key(key)
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
