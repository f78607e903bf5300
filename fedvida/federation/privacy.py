"""Differential privacy of the federated updates: Flower's DP wrappers and mods, plus accounting.

``privacy.dp.mode`` picks one of Flower 1.39's mechanisms; fedvida adds what a study needs around
them (docs/privacy-and-communication.md):

* ``server-fixed`` / ``server-adaptive``: the server clips every client update and adds Gaussian
  noise to the average (``DifferentialPrivacyServerSide{Fixed,Adaptive}Clipping``);
* ``client-fixed`` / ``client-adaptive``: clients clip their own update (Flower's
  ``fixedclipping_mod`` / ``adaptiveclipping_mod``, applied by `dp_mod`) and the server adds the
  noise (``DifferentialPrivacyClientSide{Fixed,Adaptive}Clipping``); the form SecAgg+ needs;
* ``local``: each client clips its update and adds Gaussian noise before sending it (Flower's
  ``LocalDpMod``); the server only averages.

What fedvida adds:

* **accounting**: after every round the cumulative (epsilon, delta) of client-level DP from an
  RDP accountant (``dp-accounting``'s ``RdpAccountant`` at the orders of Flower's), with the
  add-or-remove-one-client relation. With ``federation.sampling: fixed`` (a fixed-size, seeded
  set of clients, which is not the Poisson sampling the amplification bounds assume) there is
  *no* amplification by sampling: the figure is an upper bound for any sampling. With
  ``poisson`` each round is the Poisson-subsampled Gaussian mechanism
  (``PoissonSampledDpEvent(q, GaussianDpEvent(z))``, Mironov et al. 2019) self-composed over
  the rounds: the amplification is included. Local DP is accounted per client over the rounds
  it took part in (the worst client is reported, no amplification);
* **uniform averaging**: a central DP run averages the clipped updates with equal weights (the
  sensitivity analysis of the Gaussian noise assumes it); clients add ``dp-weight = 1``;
* **noise calibrated to the updates averaged**: with fixed-size sampling, a round where some
  sampled clients failed averages fewer updates, so the noise standard deviation uses the number
  actually averaged. With Poisson sampling the number of clients is random and is not private,
  so the aggregate uses the *expected* number ``q n`` as a fixed denominator (DP-FedAvg of
  McMahan et al. 2018): sum of the m clipped updates / (q n) plus noise of std ``z C / (q n)``,
  released every round, also when m is 0 (the model then moves by the noise alone);
* **checkpointable state**: the adaptive clipping norm and the ledger of noisy releases are saved
  with the model, so that ``--resume`` continues the same account;
* **noise seed**: fresh OS entropy unless ``privacy.dp.noise_seed`` is set (reproducible studies;
  anyone who knows the seed can remove the noise).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid

from fedvida.config import CENTRAL_DP_MODES, Config, DpConfig
from fedvida.errors import ConfigError
from fedvida.federation import records as R
from fedvida.federation.flower_compat import (
    adaptive_clipping_classes,
    add_central_noise,
    rdp_orders,
)
from fedvida.federation.keys import CFG_DP_MODE, CFG_DP_SEED, DP_WEIGHT_KEY

_log = logging.getLogger("fedvida.privacy")

CENTRAL_MODES = CENTRAL_DP_MODES
ACCOUNTING = "RDP, add/remove one client, no sampling amplification"
ACCOUNTING_POISSON = ("RDP, add/remove one client, Poisson-subsampled Gaussian "
                      "(amplification by sampling, q={q:g})")


def accounting_statement(dp: DpConfig, sampling_rate: float) -> str:
    """The ``accounting`` entry of a privacy report: which analysis the epsilon comes from."""
    if dp.mode in CENTRAL_MODES and sampling_rate < 1.0:
        return ACCOUNTING_POISSON.format(q=sampling_rate)
    return ACCOUNTING


def local_noise_std(dp: DpConfig) -> float:
    """Standard deviation of `LocalDpMod`'s noise: ``S sqrt(2 ln(1.25/delta)) / epsilon``."""
    return float(local_sensitivity(dp) * np.sqrt(2 * np.log(1.25 / dp.local_delta))
                 / dp.local_epsilon)


def local_sensitivity(dp: DpConfig) -> float:
    """L2 sensitivity of a clipped update: two updates of norm <= C differ by at most 2C."""
    return float(dp.local_sensitivity or 2.0 * dp.clipping_norm)


def _seed_noise(seed: int | None, *parts: int) -> None:
    """Seed numpy's global generator (Flower's DP code draws its noise from it)."""
    if seed is None:
        np.random.seed(None)  # OS entropy
    else:
        np.random.seed(int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0]))


class PrivacyLedger:
    """The releases a run made, and the cumulative (epsilon, delta) they cost.

    Central modes record one Gaussian release per aggregated round (noise multiplier ``z`` relative
    to the clipping norm, ``m`` updates averaged). Local DP records, per client, the rounds it
    took part in; its noise multiplier is ``sigma / sensitivity``.
    """

    def __init__(self, dp: DpConfig, population: int, sampling_rate: float = 1.0) -> None:
        self.dp = dp
        self.population = max(1, int(population))
        self.sampling_rate = float(sampling_rate)  # Poisson q of central releases (1: none)
        self.releases: list[tuple[float, int]] = []  # central: (z, m) per noisy aggregate
        self.participation: dict[int, int] = {}  # local: partition -> rounds taken part in

    @property
    def local_multiplier(self) -> float:
        return local_noise_std(self.dp) / local_sensitivity(self.dp)

    def record_central(self, noise_multiplier: float, averaged: int) -> None:
        self.releases.append((float(noise_multiplier), int(averaged)))

    def record_local(self, partitions: Iterable[int]) -> None:
        for part in partitions:
            self.participation[int(part)] = self.participation.get(int(part), 0) + 1

    def epsilon(self) -> float:
        """Cumulative epsilon at ``dp.target_delta`` (0 before any release, inf without noise)."""
        if self.dp.mode == "local":
            count = max(self.participation.values(), default=0)
            return gaussian_epsilon([(self.local_multiplier, count)], self.dp.target_delta,
                                    self.population)
        return gaussian_epsilon([(z, 1) for z, _ in self.releases], self.dp.target_delta,
                                self.population, self.sampling_rate)

    def report(self) -> dict[str, Any]:
        """The ``privacy`` entry of a metrics.jsonl line (cumulative after the round)."""
        out: dict[str, Any] = {
            "mode": self.dp.mode, "epsilon": self.epsilon(), "delta": self.dp.target_delta,
            "accounting": accounting_statement(self.dp, self.sampling_rate),
            "clipping_norm": self.dp.clipping_norm,
        }
        if self.dp.mode == "local":
            out.update(noise_std=local_noise_std(self.dp), noise_multiplier=self.local_multiplier,
                       releases=max(self.participation.values(), default=0),
                       round_epsilon=self.dp.local_epsilon, round_delta=self.dp.local_delta)
        else:
            out.update(noise_multiplier=self.dp.noise_multiplier, releases=len(self.releases))
            if self.sampling_rate < 1.0:
                out.update(sampling="poisson", sampling_rate=self.sampling_rate,
                           expected_clients=self.sampling_rate * self.population)
        return out

    def state_arrays(self) -> dict[str, np.ndarray]:
        parts = sorted(self.participation)
        return {
            "dp/releases": np.array(self.releases, dtype=np.float64).reshape(-1, 2),
            "dp/participation": np.array([[p, self.participation[p]] for p in parts],
                                         dtype=np.int64).reshape(-1, 2),
        }

    def load_state_arrays(self, state: Mapping[str, np.ndarray]) -> None:
        if "dp/releases" in state:
            self.releases = [(float(z), int(m)) for z, m in np.asarray(state["dp/releases"])]
        if "dp/participation" in state:
            self.participation = {int(p): int(c) for p, c in np.asarray(state["dp/participation"])}


def gaussian_epsilon(events: list[tuple[float, int]], delta: float, population: int,
                     sampling_rate: float = 1.0) -> float:
    """Cumulative epsilon of composed Gaussian releases ``(noise multiplier, count)`` (RDP).

    Add-or-remove-one-client relation. ``sampling_rate`` 1 (the default): no amplification by
    sampling (Flower's ``RdpAccountant``, dp-accounting underneath). ``sampling_rate`` q < 1:
    every release is the Poisson-subsampled Gaussian mechanism
    (``PoissonSampledDpEvent(q, GaussianDpEvent(z))``) self-composed ``count`` times in
    dp-accounting's ``RdpAccountant`` at the integer orders among Flower's (2..63, 128..1024:
    the closed form of Mironov et al. 2019; dp-accounting's series for fractional orders may
    not converge for small z and large q, and dropping them costs under 1% of epsilon, an upper
    bound still). No release costs 0; a release without
    noise is inf. ``population`` only documents the setting (the bound does not depend on it).
    """
    events = [(z, c) for z, c in events if c > 0]
    if not events:
        return 0.0
    if any(z <= 0 for z, _ in events):
        return float("inf")
    from flwr.serverapp import (
        GaussianPrivacyEvent,
        NeighboringRelation,
        PrivacyConfig,
        RdpAccountant,
        SamplingMethod,
    )

    accountant = RdpAccountant(PrivacyConfig(
        target_delta=delta, population_size=population,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION,
    ))
    if sampling_rate >= 1.0:
        for z, count in events:
            accountant.compose(GaussianPrivacyEvent(noise_multiplier=z, sample_size=1,
                                                    population_size=population), count)
        return float(accountant.get_epsilon(delta))
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant as DpAccountingRdp

    orders = [a for a in rdp_orders(accountant) if a.is_integer()]
    rdp = DpAccountingRdp(orders, dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
    for z, count in events:
        rdp.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
            sampling_rate, dp_accounting.GaussianDpEvent(z)), count))
    return float(rdp.get_epsilon(delta))


class PrivateStrategy:
    """A fedvida strategy behind one of Flower's central DP wrappers, with a privacy ledger.

    Everything that is not training (sampling, evaluation, node mapping, checkpoint state) is the
    inner `ReproducibleFedAvg`'s; ``configure_train`` / ``aggregate_train`` go through the wrapper,
    which calls the inner strategy in turn.
    """

    _OWN = ("inner", "wrapper", "dp", "ledger", "denominator")

    def __init__(self, inner: Any, wrapper: Any | None, cfg: Config, population: int) -> None:
        self.inner = inner
        self.wrapper = wrapper
        self.dp = cfg.privacy.dp
        poisson = wrapper is not None and cfg.federation.sampling == "poisson"
        rate = cfg.federation.fraction_train if poisson else 1.0
        self.ledger = PrivacyLedger(self.dp, population, rate)
        # Poisson central DP: sum / (q n) and noise z C / (q n), released every round
        self.denominator: float | None = rate * population if poisson else None
        if self.denominator is not None:
            inner.fixed_denominator = self.denominator

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # the round loop resets e.g. ``rejected`` on the strategy: that is the inner one's state
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.inner, name, value)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config[CFG_DP_MODE] = self.dp.mode
        if self.dp.noise_seed is not None:
            config[CFG_DP_SEED] = int(self.dp.noise_seed)
        if self.wrapper is None:
            return self.inner.configure_train(server_round, arrays, config, grid)
        return self.wrapper.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        # Flower's wrappers refuse to aggregate when any reply is an error; fedvida records
        # failures and averages the others, so only successful replies reach the wrapper
        ok = [r for r in replies if not r.has_error()]
        if self.wrapper is None:  # local DP: noise already added by each client
            arrays, metrics = self.inner.aggregate_train(server_round, ok)
            if arrays is not None:
                part = self.inner.node_to_partition
                self.ledger.record_local(part.get(r.metadata.src_node_id, -1) for r in ok)
            return arrays, metrics
        valid, _ = self.inner.check_replies(ok, is_train=True)
        if self.denominator is not None:
            return self._aggregate_poisson(server_round, valid)
        if not valid:
            return None, None
        # noise std = z C / m for the m updates actually averaged (not the number sampled)
        self.wrapper.num_sampled_clients = len(valid)
        _seed_noise(self.dp.noise_seed, server_round, 1)
        arrays, metrics = self.wrapper.aggregate_train(server_round, valid)
        if arrays is not None:
            self.ledger.record_central(self.dp.noise_multiplier, len(valid))
        return arrays, metrics

    def _aggregate_poisson(
        self, server_round: int, valid: list[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """DP-FedAvg with a fixed denominator: one noisy release per round, whoever came.

        The inner strategy turns the uniform mean of the m clipped updates into their sum
        divided by ``q n``; the wrapper adds noise of std ``z C / (q n)``. With no update the
        release is the current model plus that noise (the mechanism the accountant composes
        runs every round, whatever the number sampled).
        """
        wrapper: Any = self.wrapper
        wrapper.num_sampled_clients = self.denominator  # the noise's q n (Flower: z C / n)
        _seed_noise(self.dp.noise_seed, server_round, 1)
        if valid:
            arrays, metrics = wrapper.aggregate_train(server_round, valid)
        else:
            arrays = add_central_noise(wrapper, ArrayRecord({
                k: Array(np.array(v, dtype=self.inner._expected_dtypes[k]))
                for k, v in self.inner._broadcast.items()}))
            metrics = MetricRecord()
        if arrays is not None:
            self.ledger.record_central(self.dp.noise_multiplier, len(valid))
        return arrays, metrics

    def privacy_report(self) -> dict[str, Any]:
        report = self.ledger.report()
        if self.wrapper is not None:
            report["clipping_norm"] = float(self.wrapper.clipping_norm)
        return report

    def state_arrays(self) -> dict[str, np.ndarray]:
        out = dict(self.inner.state_arrays())
        out.update(self.ledger.state_arrays())
        if self.wrapper is not None:
            out["dp/clipping_norm"] = np.array([self.wrapper.clipping_norm], dtype=np.float64)
        return out

    def load_state_arrays(self, state: Mapping[str, np.ndarray]) -> None:
        self.inner.load_state_arrays({k: v for k, v in state.items()
                                      if not k.startswith("dp/")})
        self.ledger.load_state_arrays(state)
        if self.wrapper is not None and "dp/clipping_norm" in state:
            self.wrapper.clipping_norm = float(np.asarray(state["dp/clipping_norm"])[0])


def privatize(strategy: Any, cfg: Config, num_nodes: int) -> Any:
    """Wrap ``strategy`` for ``privacy.dp`` (returned unchanged when DP is off).

    Raises
    ------
    ConfigError
        When Flower rejects the settings (e.g. adaptive clipping whose noise multiplier is too
        large for the clipped-count noise), naming the field.
    """
    dp = cfg.privacy.dp
    if dp.mode == "off":
        return strategy
    _quiet_flower_dp_logs()
    if dp.mode == "local":
        return PrivateStrategy(strategy, None, cfg, num_nodes)
    from flwr.serverapp.strategy import (
        DifferentialPrivacyClientSideFixedClipping,
        DifferentialPrivacyServerSideFixedClipping,
    )

    if dp.mode.endswith("adaptive"):
        server_cls, client_cls = adaptive_clipping_classes()
    strategy.weighted_by_key = DP_WEIGHT_KEY  # equal weights: the noise assumes them
    sampled = len(strategy.sample(1)) if hasattr(strategy, "partition_to_node") else num_nodes
    if cfg.federation.sampling == "poisson":  # Flower's constructor wants an int; the run sets
        sampled = max(1, round(cfg.federation.fraction_train * num_nodes))  # q n each round
    wrapper: Any
    try:
        if dp.mode.endswith("fixed"):
            cls: Any = (DifferentialPrivacyServerSideFixedClipping if dp.mode == "server-fixed"
                        else DifferentialPrivacyClientSideFixedClipping)
            wrapper = cls(strategy, noise_multiplier=dp.noise_multiplier,
                          clipping_norm=dp.clipping_norm, num_sampled_clients=sampled)
        else:
            cls = server_cls if dp.mode == "server-adaptive" else client_cls
            wrapper = cls(strategy, noise_multiplier=dp.noise_multiplier,
                          num_sampled_clients=sampled, initial_clipping_norm=dp.clipping_norm,
                          target_clipped_quantile=dp.target_clipped_quantile,
                          clip_norm_lr=dp.clip_norm_lr,
                          clipped_count_stddev=dp.clipped_count_stddev)
    except ValueError as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"privacy.dp: {first}") from None
    return PrivateStrategy(strategy, wrapper, cfg, num_nodes)


class _RoundChatter(logging.Filter):
    """Drops the INFO line Flower's DP mods log for every client and round (kept at --verbose
    level in the server's own log: the privacy report says the same once per round)."""

    MARKERS = ("clipped by value", "noise with")
    # fedvida sets the wrapper's client count itself (the updates averaged, or q n under Poisson
    # sampling, where a different number of replies is the design): Flower's warning misleads
    EXPECTED = ("differs from the number of sampled clients",)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if any(m in text for m in self.EXPECTED):
            return False
        return record.levelno > logging.INFO or not any(m in text for m in self.MARKERS)


def _quiet_flower_dp_logs() -> None:
    flwr_logger = logging.getLogger("flwr")
    if not any(isinstance(f, _RoundChatter) for f in flwr_logger.filters):
        flwr_logger.addFilter(_RoundChatter())


def dp_mod(msg: Message, context: Context, call_next: Any) -> Message:
    """Client mod: apply the DP mechanism the server's train instruction names, if any.

    ``client-fixed`` / ``client-adaptive`` run Flower's clipping mods (the server's wrapper put the
    clipping norm in the instruction), ``local`` runs ``LocalDpMod`` with the run's settings;
    otherwise the message passes through. Noise comes from fresh OS entropy unless the run sets
    ``privacy.dp.noise_seed`` (then it is seeded by (seed, round, partition)).
    """
    conf = msg.content.config_records.get(R.CONFIG_KEY)
    mode = str(conf.get(CFG_DP_MODE, "off")) if conf is not None else "off"
    if mode == "off" or mode.startswith("server-"):
        return call_next(msg, context)
    _quiet_flower_dp_logs()
    from flwr.clientapp.mod import LocalDpMod, adaptiveclipping_mod, fixedclipping_mod

    if mode == "client-fixed":
        return fixedclipping_mod(msg, context, call_next)
    if mode == "client-adaptive":
        return adaptiveclipping_mod(msg, context, call_next)
    if mode != "local" or conf is None:
        raise ConfigError(f"privacy.dp.mode: unknown mode {mode!r} sent by the server")
    from fedvida.federation.node import instruction_config
    from fedvida.federation.run_config import partition_of

    dp = instruction_config(conf, context.node_config).privacy.dp
    seed = conf.get(CFG_DP_SEED)
    _seed_noise(None if seed is None else int(seed),  # type: ignore[arg-type]
                int(conf[R.CFG_ROUND]), partition_of(context.node_config))  # type: ignore[arg-type]
    mod = LocalDpMod(clipping_norm=dp.clipping_norm, sensitivity=local_sensitivity(dp),
                     epsilon=dp.local_epsilon, delta=dp.local_delta)
    return mod(msg, context, call_next)
