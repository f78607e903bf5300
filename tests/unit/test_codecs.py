"""The update and weight codecs (fedvida.federation.codecs), pure numpy, no Flower.

Round trips are checked on random and adversarial tensors against their stated bounds; the
Flower wiring (bytes on the wire, the client mod, rounds) is tests/unit/test_compression.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedvida.federation import codecs as C

F16_REL = 2.0**-11  # float16 rounding: half of 2^-10 relative spacing


def _adversarial() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    outlier = rng.standard_normal(1000).astype(np.float32) * 1e-3
    outlier[17] = 50.0
    return {
        "normal": rng.standard_normal((64, 33)).astype(np.float32),
        "outlier": outlier,
        "zeros": np.zeros((5, 7), np.float32),
        "constant": np.full(100, 0.37, np.float32),
        "negative": -np.abs(rng.standard_normal(300)).astype(np.float32) - 2.0,
        "tiny": (rng.standard_normal(200) * 1e-30).astype(np.float32),
        "huge": np.array([3e38, -3e38, 1.0, 0.0], np.float32),
        "scalar": np.array(2.5, np.float32),
        "empty": np.zeros((0, 4), np.float32),
        "ties": np.ones(64, np.float32),
        "uniform": rng.uniform(-1e4, 1e4, 777).astype(np.float32),
    }


# --- codecs ----------------------------------------------------------------------------------

def test_int8_round_trip_is_within_half_a_step_and_keeps_zero_exact() -> None:
    for name, x in _adversarial().items():
        q = C.quantize_int8(x)
        assert q is not None, name
        codes, affine = q
        assert codes.dtype == np.int8 and codes.shape == x.shape and affine.dtype == np.float32
        back = C.dequantize_int8(codes, affine)
        scale = float(affine[0])
        err = np.abs(back.astype(np.float64) - x.astype(np.float64))
        # s/2 from rounding, plus float32 rounding of the decoded product
        bound = scale / 2 + np.abs(x.astype(np.float64)) * 2.0**-23
        assert (err <= bound).all(), (name, float(err.max()), scale)
        assert (back[x == 0] == 0).all(), name  # zero is on the grid
        if x.size and x.max() > x.min():  # the grid spans the range in at most 253 steps
            span = max(float(x.max()), 0.0) - min(float(x.min()), 0.0)
            assert scale <= span / 253 * (1 + 1e-6), name


def test_int8_refuses_what_it_cannot_represent() -> None:
    assert C.quantize_int8(np.array([1.0, np.nan], np.float32)) is None
    assert C.quantize_int8(np.array([np.inf], np.float32)) is None
    subnormal = np.array([1e-44, -1e-44], np.float32)  # the scale would not be a normal float
    assert C.quantize_int8(subnormal) is None


def test_float16_update_error_is_relative_and_out_of_range_goes_plain() -> None:
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(5000) * np.exp(rng.uniform(-8, 10, 5000))).astype(np.float32)
    x = x[np.abs(x) > 6.2e-5]  # float16's normal range (below: absolute error <= 2^-25)
    (enc,) = C.encode_delta("w", x, "float16", 0.1).values()
    assert enc.dtype == np.float16
    rel = np.abs(enc.astype(np.float64) - x) / np.abs(x)
    assert rel.max() <= F16_REL
    assert C.encode_delta("w", np.array([7e4], np.float32), "float16", 0.1) is None
    assert C.encode_delta("w", np.array([np.nan], np.float32), "float16", 0.1) is None


def test_float16_of_the_update_keeps_a_step_that_float16_weights_lose() -> None:
    weights = np.ones(8, np.float32)
    new = weights + np.float32(1e-4)
    # float16 weights: 1.0001 rounds back to 1.0 (spacing 9.8e-4 at 1.0): the step is gone
    assert (new.astype(np.float16).astype(np.float32) == weights).all()
    packed = C.compress_update({"w": new}, {"w": weights}, "float16")
    got = C.decode(packed.arrays, {"w": weights})["w"]
    np.testing.assert_allclose(got - weights, new - weights, rtol=1e-3)


def test_topk_keeps_the_largest_entries_exactly() -> None:
    for name, x in _adversarial().items():
        if not np.isfinite(x).all() or x.ndim == 0:
            continue
        for fraction in (0.01, 0.1, 0.5):
            idx, val = C.topk_select(x, fraction)
            k = C.topk_count(x.size, fraction)
            assert idx.dtype == np.int32 and len(idx) == k == min(x.size, max(
                int(np.ceil(fraction * x.size)), 1 if x.size else 0)), name
            flat = x.reshape(-1)
            np.testing.assert_array_equal(val, flat[idx])  # kept entries are exact
            dropped = np.delete(np.abs(flat), idx)
            if dropped.size:
                assert np.abs(val).min() >= dropped.max(), name
            back = C.topk_restore(idx, val, x.shape)
            assert np.count_nonzero(back.reshape(-1)[np.setdiff1d(np.arange(x.size), idx)]) == 0


@pytest.mark.parametrize("codec", ["float16", "int8", "topk"])
def test_error_feedback_conserves_the_sum_of_updates(codec: str) -> None:
    rng = np.random.default_rng(3)
    shapes = {"a": (40, 30), "b": (30,)}
    reference = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    residual: dict[str, np.ndarray] = {}
    total_update = {k: np.zeros(s) for k, s in shapes.items()}
    total_sent = {k: np.zeros(s) for k, s in shapes.items()}
    for _ in range(12):
        update = {k: (rng.standard_normal(s) * 0.01).astype(np.float32)
                  for k, s in shapes.items()}
        weights = {k: reference[k] + update[k] for k in shapes}
        packed = C.compress_update(weights, reference, codec, 0.1, residual)
        decoded = C.decode(packed.arrays, reference)
        for k in shapes:
            total_update[k] += weights[k].astype(np.float64) - reference[k]
            total_sent[k] += decoded[k].astype(np.float64) - reference[k]
        residual = packed.residual
    for k in shapes:  # sent + what is still held back == everything the client computed
        np.testing.assert_allclose(total_sent[k] + residual[k], total_update[k], atol=1e-5)
    if codec == "topk":  # without feedback, top-k's dropped mass is simply lost
        lost = C.compress_update(weights, reference, "topk", 0.1, None)
        assert lost.residual == {}
        assert np.abs(residual["a"]).max() > 0


def test_topk_dense_fallback_and_unencodable_tensors_travel_as_plain_weights() -> None:
    ref = {"big": np.zeros(100, np.float32), "small": np.zeros(2, np.float32),
           "bad": np.zeros(4, np.float32), "count": np.array(5, np.int64)}
    new = {"big": np.arange(100, dtype=np.float32), "small": np.ones(2, np.float32),
           "bad": np.array([1, np.nan, 0, 0], np.float32), "count": np.array(6, np.int64)}
    packed = C.compress_update(new, ref, "topk", 0.1, {})
    assert set(packed.arrays) == {"big::d-topk-idx", "big::d-topk-val", "small::d-f32", "bad",
                                  "count"}
    assert packed.plain == ["bad", "count"] and set(packed.residual) == {"big", "small"}
    out = C.decode(packed.arrays, ref)
    np.testing.assert_array_equal(out["small"], new["small"])  # k >= n/2: dense, exact
    assert out["count"] == 6 and np.isnan(out["bad"][1])
    np.testing.assert_array_equal(np.sort(np.nonzero(out["big"])[0]), np.arange(90, 100))


def test_decode_rejects_inconsistent_records() -> None:
    ref = {"w": np.zeros((4, 4), np.float32)}
    good = C.encode_delta("w", np.ones((4, 4), np.float32), "int8", 0.1)
    assert good is not None
    bad_cases = [
        {"w::d-i8": good["w::d-i8"]},  # affine part missing
        {**good, "w::d-f16": np.zeros((4, 4), np.float16)},  # two encodings of one tensor
        {"w::d-i8": np.zeros((2, 8), np.int8), "w::d-i8-affine": good["w::d-i8-affine"]},
        {"w::d-topk-idx": np.array([16], np.int32), "w::d-topk-val": np.ones(1, np.float32)},
        {"w::d-topk-idx": np.array([3, 3], np.int32), "w::d-topk-val": np.ones(2, np.float32)},
        {"v::d-f16": np.zeros(2, np.float16)},  # an update of a tensor that was not sent
    ]
    for case in bad_cases:
        with pytest.raises(C.CodecError):
            C.decode(case, ref)
    np.testing.assert_array_equal(C.decode(good, ref)["w"], np.ones((4, 4), np.float32))
