"""Differential privacy: the accountant against known values, Flower's DP wrappers and mods as
fedvida drives them (clipping bounds, noise calibrated to the updates averaged, ledger state).

Rounds run through `run_round` on the in-process grid of fed_helpers (stand-in clients, no Ray);
the real simulation with DP is in tests/integration/test_privacy_sim.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from fed_helpers import LocalGrid, _initial, stand_in_client
from flwr.app import ConfigRecord, Context, Message

from fedvida.config import Config, load_config
from fedvida.errors import ConfigError
from fedvida.federation import records as R
from fedvida.federation.keys import DP_WEIGHT_KEY
from fedvida.federation.privacy import (
    PrivacyLedger,
    dp_mod,
    gaussian_epsilon,
    local_noise_std,
    privatize,
)
from fedvida.federation.rounds import run_round
from fedvida.federation.strategy import make_strategy, sample_partitions

DELTA = 1e-5


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def analytic_gaussian_epsilon(sigma: float, delta: float) -> float:
    """Exact epsilon of one Gaussian mechanism with sensitivity 1 (Balle & Wang 2018, Thm 8)."""

    def delta_of(eps: float) -> float:
        return _phi(1 / (2 * sigma) - eps * sigma) - math.exp(eps) * _phi(-1 / (2 * sigma)
                                                                        - eps * sigma)

    lo, hi = 0.0, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if delta_of(mid) > delta else (lo, mid)
    return hi


def rdp_gaussian_epsilon(sigma: float, count: int, delta: float, orders: list[float]) -> float:
    """Closed form: RDP of the Gaussian mechanism is a / (2 sigma^2) per release, converted with
    Prop. 12 of Balle et al. 2020 (the conversion dp-accounting uses), best order."""
    best = math.inf
    for a in orders:
        rdp = count * a / (2 * sigma**2)
        eps = rdp + math.log1p(-1 / a) - (math.log(delta) + math.log(a)) / (a - 1)
        best = min(best, max(eps, 0.0))
    return best


def test_accountant_matches_known_values_for_the_gaussian_mechanism() -> None:
    from flwr.serverapp import (
        NeighboringRelation,
        PrivacyConfig,
        RdpAccountant,
        SamplingMethod,
    )

    from fedvida.federation.flower_compat import rdp_orders

    orders = rdp_orders(RdpAccountant(PrivacyConfig(
        DELTA, 10, NeighboringRelation.ADD_OR_REMOVE_ONE, SamplingMethod.NO_AMPLIFICATION,
    )))
    for sigma, count in [(1.0, 1), (1.0, 10), (4.0, 50)]:
        # Act
        eps = gaussian_epsilon([(sigma, count)], DELTA, population=10)
        # Assert: the closed-form RDP curve, and an upper bound close to the exact value
        assert eps == pytest.approx(rdp_gaussian_epsilon(sigma, count, DELTA, orders), rel=1e-9)
        exact = analytic_gaussian_epsilon(sigma / math.sqrt(count), DELTA)
        assert exact <= eps <= 1.3 * exact
    # one Gaussian release with sigma=1 at delta=1e-5: exact epsilon 4.38 (analytic Gaussian)
    assert analytic_gaussian_epsilon(1.0, DELTA) == pytest.approx(4.38, abs=0.01)
    # composition: four releases at sigma=2 cost what one at sigma=1 does (RDP adds up)
    assert gaussian_epsilon([(2.0, 4)], DELTA, 10) == pytest.approx(
        gaussian_epsilon([(1.0, 1)], DELTA, 10), rel=1e-9)
    assert gaussian_epsilon([], DELTA, 10) == 0.0
    assert gaussian_epsilon([(0.0, 1)], DELTA, 10) == math.inf


def _dp_cfg(**dp: object) -> Config:
    sets = [f"privacy.dp.{k}={v}" for k, v in dp.items()]
    return load_config(None, ["federation.min_train_clients=2", *sets])


def _dp_client(fail: bool = False) -> object:
    inner = stand_in_client(fail=fail)

    def handle(msg: Message, context: Context) -> Message:
        out = inner(msg, context)
        next(iter(out.content.metric_records.values()))[DP_WEIGHT_KEY] = 1
        return out

    return lambda msg, ctx: dp_mod(msg, ctx, handle)


def _rounds(cfg: Config, grid: LocalGrid, rounds: int) -> tuple[list, object]:
    strategy = make_strategy(cfg, len(grid.node_ids))
    strategy.setup_nodes({n: int(grid.contexts[n].node_config["partition-id"])
                          for n in grid.node_ids}, cfg.train.seed)
    strategy = privatize(strategy, cfg, len(grid.node_ids))
    record, outcomes = R.numpy_to_arrays(_initial()), []
    for rnd in range(1, rounds + 1):
        conf = ConfigRecord({R.CFG_METHOD: "video_only", R.CFG_EPOCHS: 1,
                             R.CFG_YAML: cfg.to_yaml()})
        out = run_round(strategy, grid, rnd, record, conf, ConfigRecord({}), 30.0, 2)
        outcomes.append((record, out))
        record = out.arrays
    return outcomes, strategy


def _update_norm(before: object, after: object) -> float:
    a, b = R.arrays_to_numpy(before), R.arrays_to_numpy(after)  # type: ignore[arg-type]
    return float(np.sqrt(sum(np.sum((a[k] - b[k]) ** 2) for k in a)))


@pytest.mark.parametrize("mode", ["server-fixed", "client-fixed"])
def test_fixed_clipping_bounds_the_aggregate_update(mode: str) -> None:
    # Arrange: no noise, a clipping norm far below the stand-in clients' update norms
    cfg = _dp_cfg(mode=mode, noise_multiplier=0.0, clipping_norm=0.01)
    grid = LocalGrid({p: _dp_client() for p in range(4)})
    # Act
    outcomes, strategy = _rounds(cfg, grid, 2)
    # Assert: the mean of clipped updates is within the clipping ball, and not trivially zero
    for before, out in outcomes:
        assert out.aggregated
        assert 0.005 < _update_norm(before, out.arrays) <= 0.01 + 1e-6
    report = strategy.privacy_report()  # type: ignore[attr-defined]
    assert report["releases"] == 2 and report["epsilon"] == math.inf  # no noise, no privacy


@pytest.mark.parametrize("mode", ["server-fixed", "client-fixed"])
def test_central_noise_std_is_computed_for_the_updates_actually_averaged(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The documented calibration: noise std = z C / m with m the updates *averaged*. With 4
    # clients sampled and one failing every round, Flower must be asked for m = 3 each round
    # (an empirical std over a few entries cannot tell 3 from 4: this spies the value itself)
    from fedvida.federation.flower_compat import dp_noise_modules

    flower_fixed = dp_noise_modules()["fixed"]

    asked: list[tuple[float, float, int]] = []
    real = flower_fixed.compute_stdv

    def spy(noise_multiplier: float, clipping_norm: float, num_sampled_clients: int) -> float:
        asked.append((noise_multiplier, clipping_norm, num_sampled_clients))
        return real(noise_multiplier, clipping_norm, num_sampled_clients)

    monkeypatch.setattr(flower_fixed, "compute_stdv", spy)
    cfg = _dp_cfg(mode=mode, noise_multiplier=2.0, clipping_norm=0.01, noise_seed=3)
    grid = LocalGrid({0: _dp_client(), 1: _dp_client(fail=True), 2: _dp_client(),
                      3: _dp_client()})
    outcomes, _ = _rounds(cfg, grid, 3)
    assert all(len(out.train.replies) == 4 for _, out in outcomes)  # 4 sampled every round
    assert asked == [(2.0, 0.01, 3)] * 3


def test_central_noise_is_calibrated_to_the_updates_averaged_and_accounted() -> None:
    # Arrange: 4 clients, one fails each round -> 3 updates averaged
    z, clip = 2.0, 0.01
    cfg = _dp_cfg(mode="server-fixed", noise_multiplier=z, clipping_norm=clip, noise_seed=3)
    grid = LocalGrid({0: _dp_client(), 1: _dp_client(fail=True), 2: _dp_client(),
                      3: _dp_client()})
    # Act
    outcomes, strategy = _rounds(cfg, grid, 3)
    # Assert: noise of std z*C/3 per entry dominates the (<= C) clipped mean
    for before, out in outcomes:
        assert [f["partition"] for f in out.train.failures] == [1]
        delta = np.concatenate([(R.arrays_to_numpy(out.arrays)[k]
                                 - R.arrays_to_numpy(before)[k]).ravel()
                                for k in R.arrays_to_numpy(before)])
        assert np.std(delta) == pytest.approx(z * clip / 3, rel=0.5)
    report = strategy.privacy_report()  # type: ignore[attr-defined]
    assert report["releases"] == 3
    assert report["epsilon"] == pytest.approx(gaussian_epsilon([(z, 3)], DELTA, 4))
    # Assert: the ledger survives a checkpoint round trip
    fresh = privatize(_setup(make_strategy(cfg, 4), grid), cfg, 4)
    fresh.load_state_arrays(strategy.state_arrays())  # type: ignore[attr-defined]
    assert fresh.privacy_report() == report


def _setup(strategy: object, grid: LocalGrid) -> object:
    strategy.setup_nodes({n: int(grid.contexts[n].node_config["partition-id"])  # type: ignore[attr-defined]
                          for n in grid.node_ids}, 0)
    return strategy


def test_seeded_noise_repeats_and_unseeded_noise_differs() -> None:
    def final(seed: object) -> dict[str, np.ndarray]:
        cfg = _dp_cfg(mode="server-fixed", noise_multiplier=1.0, clipping_norm=0.1,
                      noise_seed=seed)
        outcomes, _ = _rounds(cfg, LocalGrid({p: _dp_client() for p in range(3)}), 1)
        return R.arrays_to_numpy(outcomes[-1][1].arrays)

    a, b, c = final(5), final(5), final("null")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("mode", ["server-adaptive", "client-adaptive"])
def test_adaptive_clipping_tracks_the_quantile_and_is_checkpointed(mode: str) -> None:
    # Arrange: the stand-in clients' update norms lie around 1
    def final_norm(initial: float, rounds: int) -> tuple[float, object]:
        cfg = _dp_cfg(mode=mode, noise_multiplier=0.1, clipping_norm=initial,
                      target_clipped_quantile=0.5, clip_norm_lr=0.5, noise_seed=1,
                      clipped_count_stddev=1.0)
        _, strategy = _rounds(cfg, LocalGrid({p: _dp_client() for p in range(4)}), rounds)
        return strategy.privacy_report()["clipping_norm"], strategy  # type: ignore[attr-defined]

    # Act / Assert: from far above it shrinks, from far below it grows (Andrew et al.), by
    # exp(-+lr (1 - q)) = exp(-+0.25) per round up to the noise of the clipped count (seeds 1-5
    # gave 0.87-1.42 times the noiseless value). A norm that did not move would be 2.1x / 0.47x
    # off, the reversed rule of Flower 1.39 worse.
    high, strategy = final_norm(100.0, 3)
    low, _ = final_norm(1e-4, 3)
    assert 0.6 < high / (100.0 * math.exp(-0.25 * 3)) < 1.7
    assert 0.6 < low / (1e-4 * math.exp(0.25 * 3)) < 1.7
    # Assert: the norm is part of the checkpointed state
    cfg = _dp_cfg(mode=mode, noise_multiplier=0.1, clipping_norm=100.0, clipped_count_stddev=1.0)
    grid = LocalGrid({p: _dp_client() for p in range(4)})
    fresh = privatize(_setup(make_strategy(cfg, 4), grid), cfg, 4)
    fresh.load_state_arrays(strategy.state_arrays())  # type: ignore[attr-defined]
    assert fresh.privacy_report()["clipping_norm"] == high


def test_adaptive_noise_too_large_for_the_count_noise_is_a_config_error() -> None:
    cfg = _dp_cfg(mode="server-adaptive", noise_multiplier=5.0)
    grid = LocalGrid({p: _dp_client() for p in range(4)})
    with pytest.raises(ConfigError, match=r"^privacy\.dp: "):
        privatize(_setup(make_strategy(cfg, 4), grid), cfg, 4)


def test_local_dp_clips_and_noises_each_update_and_counts_participation() -> None:
    cfg = _dp_cfg(mode="local", clipping_norm=0.01, local_epsilon=50.0, local_delta=1e-5,
                  noise_seed=2)
    sigma = local_noise_std(cfg.privacy.dp)
    assert sigma == pytest.approx(0.02 * math.sqrt(2 * math.log(1.25e5)) / 50.0)
    grid = LocalGrid({p: _dp_client() for p in range(4)})
    outcomes, strategy = _rounds(cfg, grid, 2)
    before, out = outcomes[0]
    n = sum(a.size for a in R.arrays_to_numpy(before).values())
    # the weighted mean of 4 noisy updates: noise std between sigma/4 and sigma/sqrt(2)
    assert sigma / 4 * math.sqrt(n) < _update_norm(before, out.arrays) < 0.01 + sigma * math.sqrt(n)
    report = strategy.privacy_report()  # type: ignore[attr-defined]
    assert report["releases"] == 2 and report["mode"] == "local"
    assert report["epsilon"] == pytest.approx(gaussian_epsilon(
        [(sigma / 0.02, 2)], DELTA, 4))


def test_invalid_privacy_combinations_are_one_line_errors() -> None:
    for sets, field in [
        (["privacy.secagg.enabled=true", "privacy.dp.mode=server-fixed"], "privacy.dp.mode"),
        (["privacy.dp.mode=client-fixed", "federation.strategy=fedadam"], "privacy.dp.mode"),
        (["privacy.dp.mode=gaussian"], "privacy.dp.mode"),
        (["privacy.dp.noise_multiplier=-1"], "privacy.dp.noise_multiplier"),
        (["privacy.dp.target_delta=1.5"], "privacy.dp.target_delta"),
        (["federation.sampling=poisson", "privacy.secagg.enabled=true",
          "privacy.dp.mode=client-fixed"], "federation.sampling"),
        (["federation.sampling=poisson", "privacy.dp.mode=server-adaptive"], "privacy.dp.mode"),
        (["federation.sampling=binomial"], "federation.sampling"),
        (["federation.sampling=poisson", "federation.fraction_train=0.05",
          "privacy.dp.mode=server-fixed"], "federation.fraction_train"),  # q n = 0.5
    ]:
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as err:
            load_config(None, sets)
        assert "\n" not in str(err.value)


def test_ledger_of_a_run_without_rounds_reports_zero() -> None:
    ledger = PrivacyLedger(_dp_cfg(mode="server-fixed").privacy.dp, 10)
    assert ledger.report()["epsilon"] == 0.0 and ledger.report()["releases"] == 0


@pytest.mark.parametrize("mode", ["server-adaptive", "client-adaptive"])
def test_adaptive_noise_uses_the_norm_the_round_clipped_with(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Flower updates the norm before adding the round's noise; fedvida scales the noise by the
    # norm the updates were clipped to (a shrinking norm would otherwise under-noise the round)
    from fedvida.federation.flower_compat import dp_noise_modules

    flower_adaptive = dp_noise_modules()["adaptive"]

    used: list[float] = []
    real = flower_adaptive.compute_stdv

    def spy(noise_multiplier: float, clipping_norm: float, num_sampled_clients: int) -> float:
        used.append(clipping_norm)
        return real(noise_multiplier, clipping_norm, num_sampled_clients)

    monkeypatch.setattr(flower_adaptive, "compute_stdv", spy)
    cfg = _dp_cfg(mode=mode, noise_multiplier=0.1, clipping_norm=100.0, clip_norm_lr=0.5,
                  clipped_count_stddev=1.0, noise_seed=4)
    _, strategy = _rounds(cfg, LocalGrid({p: _dp_client() for p in range(4)}), 3)
    final = strategy.privacy_report()["clipping_norm"]  # type: ignore[attr-defined]
    # round 1 clipped to the initial 100 (Flower's order would have used the shrunk norm, ~78);
    # the norm shrinks every round (updates ~1 are never clipped) and each round's noise used
    # the norm in force while it clipped, the last one before the final update
    assert len(used) == 3 and used[0] == 100.0
    assert 100.0 > used[1] > used[2] > final


# --- Poisson sampling and the subsampled Gaussian ------------------------------------------------
def sampled_gaussian_log_rdp(q: float, z: float, alpha: int) -> float:
    """RDP of the Poisson-subsampled Gaussian at integer order ``alpha``, written out here from
    Mironov, Talwar & Zhang 2019 (Sec. 3.3), independently of dp-accounting:
    ``log(sum_k C(alpha,k) (1-q)^(alpha-k) q^k exp((k^2-k) / (2 z^2))) / (alpha - 1)``."""
    terms = [math.log(math.comb(alpha, k)) + (alpha - k) * math.log1p(-q) + k * math.log(q)
             + (k * k - k) / (2 * z * z) for k in range(alpha + 1)]
    top = max(terms)
    return (top + math.log(sum(math.exp(t - top) for t in terms))) / (alpha - 1)


def sampled_gaussian_epsilon(q: float, z: float, rounds: int, delta: float,
                             standard: bool = False) -> float:
    """Best integer order of the closed form above, composed over ``rounds``; the standard
    conversion ``rdp + log(1/delta)/(alpha-1)`` (Mironov 2017) or Balle et al. 2020's Prop. 12."""
    best = math.inf
    for a in [*range(2, 64), 128, 256, 512, 1024]:
        rdp = rounds * sampled_gaussian_log_rdp(q, z, a)
        if standard:
            eps = rdp + math.log(1 / delta) / (a - 1)
        else:
            eps = rdp + math.log1p(-1 / a) - (math.log(delta) + math.log(a)) / (a - 1)
        best = min(best, max(eps, 0.0))
    return best


@pytest.mark.parametrize(("q", "z", "rounds"), [(0.01, 0.8, 50), (0.02, 1.0, 100),
                                                (0.05, 1.5, 30), (0.05, 0.7, 200)])
def test_poisson_accountant_matches_the_closed_form_rdp_of_the_sampled_gaussian(
    q: float, z: float, rounds: int
) -> None:
    # Act
    eps = gaussian_epsilon([(z, rounds)], DELTA, 1000, sampling_rate=q)
    # Assert: the independent closed form with the same conversion; the standard (looser)
    # conversion bounds it from above; amplification makes it far smaller than without sampling
    assert eps == pytest.approx(sampled_gaussian_epsilon(q, z, rounds, DELTA), rel=1e-6)
    assert eps <= sampled_gaussian_epsilon(q, z, rounds, DELTA, standard=True)
    assert eps < 0.5 * gaussian_epsilon([(z, rounds)], DELTA, 1000)


def test_poisson_accounting_at_q_near_one_reduces_to_the_unsampled_number() -> None:
    # z=1, 3 rounds, delta 1e-5: 9.0 without sampling (docs); q -> 1 takes the Poisson path
    today = gaussian_epsilon([(1.0, 3)], DELTA, 10)
    assert today == pytest.approx(9.01, abs=0.01)
    assert gaussian_epsilon([(1.0, 3)], DELTA, 10, sampling_rate=0.999999) == pytest.approx(
        today, rel=0.01)
    assert gaussian_epsilon([(1.0, 3)], DELTA, 10, sampling_rate=1.0) == today


def test_poisson_sampling_is_seeded_independent_and_may_be_empty() -> None:
    pool = list(range(200))
    first = sample_partitions(pool, 0.05, 2, seed=7, server_round=3, method="poisson")
    # Assert: reproducible (a resumed run samples the same), differs between rounds
    assert first == sample_partitions(pool, 0.05, 2, seed=7, server_round=3, method="poisson")
    assert first != sample_partitions(pool, 0.05, 2, seed=7, server_round=4, method="poisson")
    sizes = [len(sample_partitions(pool, 0.05, 2, 7, r, "poisson")) for r in range(400)]
    assert len(set(sizes)) > 5  # a random size, not max(int(n q), minimum)
    assert np.mean(sizes) == pytest.approx(10, rel=0.1)  # q n on average
    small = [sample_partitions(range(4), 0.1, 2, 7, r, "poisson") for r in range(50)]
    assert [] in small  # min_train_clients does not pad a Poisson sample
    counts = np.bincount([p for r in range(400)
                          for p in sample_partitions(pool, 0.05, 2, 7, r, "poisson")],
                         minlength=200)
    assert counts.min() > 0 and counts.max() < 60  # every client, each about 20 times


@pytest.mark.parametrize("mode", ["server-fixed", "client-fixed"])
def test_poisson_central_dp_divides_by_q_n_and_releases_every_round(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedvida.federation.flower_compat import dp_noise_modules

    flower_fixed = dp_noise_modules()["fixed"]

    asked: list[float] = []
    real = flower_fixed.compute_stdv

    def spy(noise_multiplier: float, clipping_norm: float, num_sampled_clients: float) -> float:
        asked.append(num_sampled_clients)
        return real(noise_multiplier, clipping_norm, num_sampled_clients)

    monkeypatch.setattr(flower_fixed, "compute_stdv", spy)
    # Arrange: 4 clients, q = 0.25 (q n = 1), no noise: the update is sum of clipped / (q n)
    clip, rounds = 0.01, 8
    cfg = load_config(None, ["federation.sampling=poisson", "federation.fraction_train=0.25",
                             f"privacy.dp.mode={mode}", "privacy.dp.noise_multiplier=0",
                             f"privacy.dp.clipping_norm={clip}"])
    grid = LocalGrid({p: _dp_client() for p in range(4)})
    strategy = privatize(_setup(make_strategy(cfg, 4), grid), cfg, 4)
    record = R.numpy_to_arrays(_initial())
    sizes = []
    for rnd in range(1, rounds + 1):
        conf = ConfigRecord({R.CFG_METHOD: "video_only", R.CFG_EPOCHS: 1,
                             R.CFG_YAML: cfg.to_yaml()})
        out = run_round(strategy, grid, rnd, record, conf, ConfigRecord({}), 30.0, 0)
        m = len(out.train.replies)
        sizes.append(m)
        assert m == len(sample_partitions(range(4), 0.25, 0, 0, rnd, "poisson"))
        # Assert: every round is a release, also with nobody sampled
        assert out.aggregated
        norm = _update_norm(record, out.arrays)
        assert norm <= m * clip + 1e-6  # at most m clipped updates over q n = 1
        if m == 0:
            assert norm == pytest.approx(0.0, abs=1e-6)
        if m >= 2:
            assert norm > clip  # a mean of clipped updates could never leave the C ball
        record = out.arrays
    assert 0 in sizes and max(sizes) >= 2  # seed 0: both kinds of round happen
    assert asked == [1.0] * rounds  # the noise's denominator is q n, never the count
    report = strategy.privacy_report()  # type: ignore[attr-defined]
    assert report["releases"] == rounds and report["sampling_rate"] == 0.25
    assert "Poisson-subsampled Gaussian" in report["accounting"]


def test_poisson_round_without_dp_and_without_clients_keeps_the_model() -> None:
    # Without DP a Poisson round is a plain round: nobody sampled -> nothing aggregated
    cfg = load_config(None, ["federation.sampling=poisson", "federation.fraction_train=0.25",
                             "federation.min_train_clients=1"])
    grid = LocalGrid({p: stand_in_client() for p in range(4)})
    strategy = _setup(make_strategy(cfg, 4), grid)
    record = R.numpy_to_arrays(_initial())
    kinds = set()
    for rnd in range(1, 7):
        conf = ConfigRecord({R.CFG_METHOD: "video_only", R.CFG_EPOCHS: 1,
                             R.CFG_YAML: cfg.to_yaml()})
        out = run_round(strategy, grid, rnd, record, conf, ConfigRecord({}), 30.0, 1)  # type: ignore[arg-type]
        m = len(out.train.replies)
        assert m == len(sample_partitions(range(4), 0.25, 1, 0, rnd, "poisson"))
        assert out.aggregated == (m > 0)
        if m == 0:
            assert _update_norm(record, out.arrays) == 0.0
        kinds.add(m > 0)
        record = out.arrays
    assert kinds == {True, False}
