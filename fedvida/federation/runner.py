"""Launch a federation as a Flower simulation (Ray backend) and collect its results.

`run_federated` is the Python entry point (`fedvida simulate` and `fedvida run` call it). It
writes the resolved config into ``runs/<name>/config.yaml``, points the ServerApp at it through
``FEDVIDA_CONFIG_PATH`` (``run_simulation`` gives apps an empty run_config), and starts
``flwr.simulation.run_simulation`` with the apps named in pyproject.toml
(``server.server_app:app``, ``clients.client_app:app``), loaded by reference as Flower does.

Flower 1.39 marks ``run_simulation`` deprecated in favour of ``flwr run``; fedvida shows that
warning and keeps the in-process engine for ``fedvida simulate`` (docs/federation.md says why).
`flwr_run_command` gives the ``flwr run`` command of the same simulation (same SuperNodes, Ray
resources, config and run folder; tests/integration/test_flwr_run.py checks the numbers match).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from fedvida.config import Config, load_config
from fedvida.errors import ConfigError, FedvidaError
from fedvida.federation.flower_compat import fast_message_pickup, replace_dead_actors
from fedvida.federation.rounds import ENGINE_STOPPED
from fedvida.federation.run_config import ENV_CONFIG, ENV_OVERRIDES
from fedvida.reporting.runlog import RunLog, final_metrics

SERVER_APP = "server.server_app:app"
CLIENT_APP = "clients.client_app:app"

FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    # keep Ray's current behaviour for num_gpus=0 without its FutureWarning on every start
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}

# Flower warnings that describe fedvida's deliberate choices, not a problem of the user's run:
# evaluation is server-side (evaluate_fn), so federated evaluation is switched off on purpose.
# Flower's deprecation warnings (e.g. of `run_simulation`) are shown, never filtered.
_EXPECTED_FLOWER_WARNINGS = ("fraction_evaluate is set to 0.0",)


class _ExpectedWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(marker in text for marker in _EXPECTED_FLOWER_WARNINGS)


def process_env(flwr_home: Path | None = None) -> dict[str, str]:
    """The environment for a Flower child process, without changing this process's.

    Adds the Flower settings and puts this interpreter's ``bin`` folder first on ``PATH``, so that
    ``flower-superlink``, ``flower-supernode`` and the ``flwr-clientapp`` processes a SuperNode
    spawns come from the same environment even when it is not activated (e.g. under ``make``).
    """
    env = {**os.environ, **FLOWER_ENV}
    # a simulation run earlier in this process hands its config to its ServerApp through these;
    # a deployed ServerApp must read run_config only, never a stale simulation's settings
    for name in (ENV_CONFIG, ENV_OVERRIDES):
        env.pop(name, None)
    env["FLWR_HOME"] = str(flwr_home or os.environ.get("FLWR_HOME") or Path(".flwr").resolve())
    bindir = str(Path(sys.executable).parent)
    if env.get("PATH", "").split(os.pathsep)[0] != bindir:
        env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")])
    return env


def flower_environment(flwr_home: Path | None = None) -> dict[str, str]:
    """Set (and return) the environment every Flower process of fedvida runs with.

    No telemetry, no update check, no run-time dependency installation, a project-local
    ``FLWR_HOME`` (``.flwr`` in the working directory unless already set) and this
    interpreter's ``bin`` folder first on ``PATH`` (see `process_env`).
    """
    env = process_env(flwr_home)
    os.environ.update(env)
    Path(env["FLWR_HOME"]).mkdir(parents=True, exist_ok=True)
    return env


def load_component(ref: str) -> Any:
    """Import ``"module:attr"`` (a Flower app component) and return the attribute."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def backend_config(cfg: Config) -> dict[str, Any]:
    """Ray backend settings: CPUs for Ray, per-client CPUs / (fractional) GPUs, quiet logs.

    With ``federation.ray_address`` Flower's ``ray.init`` joins that cluster (``address``) and
    gets no CPU/GPU counts: Ray refuses them when connecting, the nodes declare their own.
    """
    fed = cfg.federation
    init: dict[str, Any] = {
        "logging_level": "WARNING",
        "log_to_driver": True,
        "include_dashboard": False,
    }
    if fed.ray_address:
        init["address"] = fed.ray_address
    else:
        init["num_cpus"] = fed.ray_num_cpus or os.cpu_count() or 1
        if fed.num_gpus_per_client == 0:
            init["num_gpus"] = 0
    return {
        "client_resources": {"num_cpus": fed.num_cpus_per_client,
                             "num_gpus": fed.num_gpus_per_client},
        "init_args": init,
    }


def ray_cluster_nodes(address: str) -> list[dict[str, float]]:
    """The resources (``{"CPU": 4.0, "GPU": 1.0, ...}``) of each live node of a Ray cluster.

    Connects a driver to ``address`` (``ray.init(address=...)``), reads ``ray.nodes()`` and
    disconnects; the cluster keeps running.

    Raises
    ------
    ConfigError
        When no Ray cluster answers at ``address`` (one line naming the field).
    """
    import ray

    host, sep, port = address.rpartition(":")
    if sep and port.isdigit() and "://" not in address:  # Ray retries a dead GCS for minutes
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
        except OSError as exc:
            raise ConfigError(f"federation.ray_address={address!r}: no Ray cluster joined "
                              f"(nothing answers there: {exc})") from None
    if ray.is_initialized():
        ray.shutdown()
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
                 include_dashboard=False)
    except Exception as exc:  # ConnectionError, ValueError (bad address), RuntimeError
        raise ConfigError(f"federation.ray_address={address!r}: no Ray cluster joined "
                          f"({_first_line(exc)})") from None
    try:
        return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive") and n["Resources"]]
    finally:
        ray.shutdown()


def clients_that_fit(nodes: list[dict[str, float]], num_cpus: float, num_gpus: float) -> int:
    """Clients Ray can run at once: per node ``int(CPU / num_cpus)`` (and likewise for GPUs),
    summed, as Flower 1.39 sizes its actor pool (``pool_size_from_resources``)."""
    total = 0
    for node in nodes:
        fit = int(node.get("CPU", 0) / num_cpus)
        if num_gpus > 0:
            fit = min(fit, int(node.get("GPU", 0) / num_gpus))
        total += fit
    return total


def federation_config(cfg: Config, num_supernodes: int) -> str:
    """``flwr run --federation-config`` value for the simulation `simulate_config` runs.

    The same Ray settings as `backend_config` (Ray's CPUs, per-client CPUs / GPUs, log level)
    and one virtual SuperNode per plan client, e.g. ``num-supernodes=4 backend="ray"
    client-resources-num-cpus=1 client-resources-num-gpus=0.0 init-args-num-cpus=2
    init-args-num-gpus=0 init-args-logging-level="WARNING" init-args-log-to-driver=true``.

    Raises
    ------
    ConfigError
        ``federation.num_cpus_per_client`` is not a whole number (Flower 1.39's simulation
        config takes an integer there, ``run_simulation`` a float).
    """
    fed = cfg.federation
    if not float(fed.num_cpus_per_client).is_integer():
        raise ConfigError(
            f"federation.num_cpus_per_client={fed.num_cpus_per_client:g}: flwr run's simulation "
            "config takes a whole number of CPUs per client (fedvida simulate takes fractions)")
    init = backend_config(cfg)["init_args"]
    parts = [f"num-supernodes={int(num_supernodes)}", 'backend="ray"',
             f"client-resources-num-cpus={int(fed.num_cpus_per_client)}",
             f"client-resources-num-gpus={float(fed.num_gpus_per_client)}",
             f"init-args-num-cpus={int(init['num_cpus'])}"]
    if "num_gpus" in init:
        parts.append(f"init-args-num-gpus={int(init['num_gpus'])}")
    parts += [f'init-args-logging-level="{init["logging_level"]}"',
              f"init-args-log-to-driver={str(bool(init['log_to_driver'])).lower()}"]
    return " ".join(parts)


def flwr_run_command(
    cfg: Config, config_path: Path, overrides: list[str], methods: list[str], name: str,
    num_supernodes: int, connection: str = "local",
) -> list[str]:
    """The ``flwr run`` command that runs what ``run_federated(cfg, methods, name)`` runs.

    ``cfg`` is ``config_path`` loaded with ``overrides``; the run folder name and the methods
    are added as overrides (``name=...``, ``train.methods=[...]``), the number of virtual
    SuperNodes (the plan's clients) and the Ray resources go to ``--federation-config``
    (`federation_config`). ``connection``: a simulation connection in ``$FLWR_HOME/config.toml``
    (``local``: Flower's managed local SuperLink).
    """
    from fedvida.federation.deploy import run_command

    wanted = [*overrides, f"name={name}", f"train.methods=[{','.join(methods)}]"]
    return run_command(connection, config_path, wanted,
                       federation_config=federation_config(cfg, num_supernodes))


def check_resources(cfg: Config, gpus: int | None = None,
                    nodes: list[dict[str, float]] | None = None) -> str | None:
    """Fail before Ray starts when not one client fits in what Ray will have.

    Flower sizes its actor pool as ``int(Ray CPUs / num_cpus_per_client)`` (and likewise for
    GPUs); an empty pool makes it log ``The ActorPool is empty`` and stop its engine, while the
    ServerApp waits on. ``gpus``: the GPUs Ray would see (default: ``torch.cuda.device_count()``).
    With ``federation.ray_address`` the cluster's live nodes count instead, node by node
    (``nodes``: their resources; default: asked from the cluster, see `ray_cluster_nodes`),
    and the one-line description of the cluster is returned (None for a local Ray).
    """
    fed = cfg.federation
    if fed.ray_address:
        nodes = ray_cluster_nodes(fed.ray_address) if nodes is None else nodes
        fits = clients_that_fit(nodes, fed.num_cpus_per_client, fed.num_gpus_per_client)
        cpus = ", ".join(f"{n.get('CPU', 0):g}" for n in nodes) or "none"
        gpus_ = ", ".join(f"{n.get('GPU', 0):g}" for n in nodes) or "none"
        if fits == 0:
            raise ConfigError(
                f"federation.num_cpus_per_client={fed.num_cpus_per_client:g} / "
                f"num_gpus_per_client={fed.num_gpus_per_client:g} fit on none of the "
                f"{len(nodes)} node(s) of the Ray cluster at federation.ray_address="
                f"{fed.ray_address} (CPUs per node: {cpus}; GPUs: {gpus_}): no client could start")
        return (f"Ray cluster at {fed.ray_address}: {len(nodes)} node(s), CPUs per node "
                f"{cpus}, GPUs {gpus_}: up to {fits} client(s) at once")
    ray_cpus = fed.ray_num_cpus or os.cpu_count() or 1
    where = ("federation.ray_num_cpus" if fed.ray_num_cpus
             else "the machine's CPUs (federation.ray_num_cpus unset)")
    if fed.num_cpus_per_client > ray_cpus:
        raise ConfigError(
            f"federation.num_cpus_per_client={fed.num_cpus_per_client:g} is more than Ray will "
            f"have ({where}={ray_cpus}): no client could start")
    if fed.num_gpus_per_client > 0:
        if gpus is None:
            import torch

            gpus = torch.cuda.device_count()
        if fed.num_gpus_per_client > gpus:
            raise ConfigError(
                f"federation.num_gpus_per_client={fed.num_gpus_per_client:g} is more than the "
                f"{gpus} GPU(s) Ray will have: no client could start")
    return None


def simulate_config(
    config_path: Path, num_clients: int, cfg: Config, overrides: str = "", verbose: bool = False
) -> None:
    """Run ``run_simulation`` for the config file at ``config_path`` and shut Ray down after.

    ``overrides`` (``a.b=v;c=w``) reach the ServerApp through ``FEDVIDA_OVERRIDES``.
    """
    from flwr.simulation import run_simulation

    flower_environment()
    saved = {name: os.environ.get(name) for name in (ENV_CONFIG, ENV_OVERRIDES)}
    os.environ[ENV_CONFIG] = str(config_path)
    os.environ[ENV_OVERRIDES] = overrides
    if not verbose:
        flwr_logger = logging.getLogger("flwr")
        flwr_logger.setLevel(logging.WARNING)
        if not any(isinstance(f, _ExpectedWarnings) for f in flwr_logger.filters):
            flwr_logger.addFilter(_ExpectedWarnings())
    cluster = check_resources(cfg)
    if cluster:
        from fedvida.reporting.console import console

        console.print(f"joining the {cluster}", markup=False)
    watch = ChildWatch()
    watch.start()
    before = set(threading.enumerate())
    ENGINE_STOPPED.clear()
    waiting: list[threading.Thread] = []
    returned = False
    try:
        with fast_message_pickup(), replace_dead_actors():
            run_simulation(
                server_app=load_component(SERVER_APP),
                client_app=load_component(CLIENT_APP),
                num_supernodes=num_clients,
                backend_name="ray",
                backend_config=backend_config(cfg),
                verbose_logging=verbose,
            )
        returned = True
    except FedvidaError:
        raise  # the ServerApp's own one-line error (Flower re-raises it)
    except Exception as exc:  # the engine failed: Flower logged the details
        raise FedvidaError(f"the simulation failed: {_first_line(exc)}") from exc
    finally:
        # Flower's engine may have stopped (failed) while the ServerApp thread still waits for
        # replies: the flag ends its waits, then the thread is given time to finish. A ServerApp
        # that finished exits right after telling the engine to stop: one still running 5 s
        # after the engine returned was waiting on a dead engine
        waiting = _join_new_threads(before, timeout=5.0) if returned else []
        ENGINE_STOPPED.set()
        stuck = _join_new_threads(before, timeout=30.0)
        ENGINE_STOPPED.clear()
        if stuck:
            logging.getLogger("fedvida.runner").warning(
                "%d thread(s) of the simulation still running: %s", len(stuck),
                ", ".join(t.name for t in stuck))
        shutdown_ray()
        watch.stop_and_reap()
        for name, value in saved.items():  # leave no run's settings to a later one
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    if waiting:  # the engine returned without an error while the ServerApp still waited
        raise FedvidaError("the simulation engine stopped while the server still waited for "
                           "clients (see the log above)")


def _first_line(exc: BaseException) -> str:
    """``RuntimeError: ...`` of ``exc``, and of its cause when Flower wrapped one."""
    text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    if exc.__cause__ is not None:
        text += f" ({_first_line(exc.__cause__)})"
    return text


def _join_new_threads(before: set[threading.Thread], timeout: float) -> list[threading.Thread]:
    """Wait (up to ``timeout`` s in all) for non-daemon threads started since ``before``
    (the ServerApp thread), not for thread-pool workers (they idle until interpreter exit)."""
    deadline = time.monotonic() + timeout
    left = []
    for thread in threading.enumerate():
        if thread in before or thread.daemon or thread is threading.current_thread() \
                or thread.name.startswith("ThreadPoolExecutor"):
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            left.append(thread)
    return left


def shutdown_ray() -> None:
    """Stop Ray if this process started it (Flower already does on a clean exit)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


class ChildWatch(threading.Thread):
    """Remembers every Ray process started during a simulation (raylet, GCS, workers, actors)
    and makes sure none outlives it: after ``ray.shutdown()`` they get ``grace`` seconds to
    exit, then SIGTERM, then SIGKILL, each by its own pid.

    Ray re-parents its workers to init, so they are found by a token placed in this process's
    environment (which every Ray process inherits), not by parentage: processes of other runs
    are never touched.
    """

    TOKEN_VAR = "FEDVIDA_SIMULATION_TOKEN"
    NAMES = ("ray::", "raylet", "gcs_server", "ray/", "default_worker")
    SETTLE_S = 2.0  # a younger process may still be exec-ing: its environment is judged again

    def __init__(self, interval: float = 0.5, grace: float = 20.0) -> None:
        super().__init__(daemon=True, name="fedvida-childwatch")
        self.interval, self.grace = interval, grace
        self.seen: dict[int, float] = {}  # pid -> create_time (guards against pid reuse)
        self._foreign: set[tuple[int, float]] = set()  # (pid, create_time) not of this run
        self._stop_event = threading.Event()
        self.token = uuid.uuid4().hex
        self.started = time.time()
        os.environ[self.TOKEN_VAR] = self.token

    def _scan(self) -> None:
        # Runs every `interval` seconds on a machine whose cores the simulation's actors need:
        # a process is judged once (its environment, read at its start, never changes) and only
        # processes carrying this run's token are looked at again (a Ray worker renames itself
        # after it starts)
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                key = (proc.pid, proc.create_time())
                if proc.pid in self.seen or key in self._foreign:
                    continue
                try:
                    ours = key[1] >= self.started - 1 and \
                        proc.environ().get(self.TOKEN_VAR) == self.token
                except psutil.AccessDenied:  # another user's process
                    ours = False
                if not ours:
                    if time.time() - key[1] > self.SETTLE_S:  # not one caught mid-exec
                        self._foreign.add(key)
                    continue
                text = " ".join([proc.name(), *proc.cmdline()])
                if any(n in text for n in self.NAMES):
                    self.seen[proc.pid] = key[1]

    def run(self) -> None:
        while not self._stop_event.is_set():
            with contextlib.suppress(psutil.Error):
                self._scan()
            self._stop_event.wait(self.interval)

    def alive(self) -> list[psutil.Process]:
        """Remembered processes that still run."""
        out = []
        for pid, created in self.seen.items():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    out.append(proc)
        return out

    def stop_and_reap(self) -> list[int]:
        """Stop watching; wait for, then terminate, survivors. Returns pids that had to be ended."""
        self._stop_event.set()
        self.join(timeout=5)
        with contextlib.suppress(psutil.Error):
            self._scan()
        os.environ.pop(self.TOKEN_VAR, None)
        deadline = time.monotonic() + self.grace
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.25)
        ended = [p.pid for p in self.alive()]
        for sig_proc in self.alive():
            with contextlib.suppress(psutil.Error):
                sig_proc.terminate()
        _, left = psutil.wait_procs(self.alive(), timeout=5)
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(left, timeout=5)
        if ended:
            logging.getLogger("fedvida.runner").warning(
                "ended %d Ray process(es) still running %gs after shutdown", len(ended), self.grace)
        return ended


def prepare_run(
    cfg: Config, methods: list[str], name: str, resume: Path | None
) -> tuple[Config, Path]:
    """Resolve the config of a new run (or reload a resumed one) and write its config.yaml."""
    if resume is not None:
        folder = Path(resume)
        saved = folder / "config.yaml"
        if not folder.is_dir():
            raise ConfigError(f"--resume {folder}: no such run folder")
        if not saved.is_file():
            raise ConfigError(f"--resume {folder}: no config.yaml (not a fedvida run folder)")
        run_cfg = load_config(saved)
        run_cfg.name = folder.name
        run_cfg.train.runs_dir = folder.parent
        return run_cfg, folder
    if not name or "/" in name or name in {".", ".."}:
        raise ConfigError(f"--name {name!r}: expected a plain folder name")
    run_cfg = cfg.model_copy(deep=True)
    run_cfg.name = name
    run_cfg.train.methods = list(methods)  # type: ignore[arg-type]
    folder = Path(run_cfg.train.runs_dir) / name
    if (folder / "metrics.jsonl").exists() or (folder / "checkpoints").exists():
        raise FedvidaError(f"run folder {folder} exists: continue it with --resume {folder} "
                           "or choose another --name")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(run_cfg.to_yaml())
    return run_cfg, folder


def run_federated(
    cfg: Config, methods: list[str], name: str, resume: Path | None = None, verbose: bool = False
) -> dict[str, dict[str, Any]]:
    """Train ``methods`` federated in a Flower simulation; returns final metrics per method.

    Parameters
    ----------
    cfg
        The resolved config (plan, features cache and dictionary must exist).
    methods
        Methods to train one after another in the same federation (one Ray start).
    name
        Run folder name under ``train.runs_dir``.
    resume
        A run folder to continue from its checkpoints with its saved config (``cfg``,
        ``methods`` and ``name`` are then ignored); finished methods are not rerun.

    Returns
    -------
    dict
        ``{method: {"top1", "macro_f1", ..., "rounds", "seconds", "bytes_down", "bytes_up"}}``.
    """
    from fedvida.data.partition import Plan

    if resume is None:
        check_resources(cfg)  # before a run folder is made for a run that cannot start
    run_cfg, folder = prepare_run(cfg, methods, name, resume)
    plan = Plan.load(Path(run_cfg.partition.plan))
    where = f"name={run_cfg.name};train.runs_dir={run_cfg.train.runs_dir}"
    simulate_config(folder / "config.yaml", plan.num_clients, run_cfg, where, verbose=verbose)
    log = RunLog(folder)
    wanted: list[str] = list(run_cfg.train.methods)
    results = {m: final_metrics(log.rounds(m)) for m in wanted}
    missing = [m for m, r in results.items() if r.get("rounds", 0) < run_cfg.federation.rounds]
    if missing:
        raise FedvidaError(f"federation ended early for {missing}; see {folder} (resume with "
                           f"--resume {folder})")
    skipped = unaggregated_rounds(log, wanted)
    if skipped:
        raise FedvidaError(f"rounds not aggregated ({describe_unaggregated(skipped)}): too few "
                           f"clients succeeded, the global model was kept; failures in "
                           f"{folder / 'metrics.jsonl'}")
    return results


def unaggregated_rounds(log: RunLog, methods: list[str]) -> dict[str, list[int]]:
    """``{method: [rounds that kept the previous global model]}`` (methods with none left out)."""
    out = {m: [int(ln["round"]) for ln in log.rounds(m) if not ln.get("aggregated", True)]
           for m in methods}
    return {m: r for m, r in out.items() if r}


def describe_unaggregated(skipped: dict[str, list[int]]) -> str:
    """``"gt_audio: 2-5 of its rounds"``-style text for `unaggregated_rounds`."""
    parts = []
    for method, rounds in skipped.items():
        spans, first, prev = [], rounds[0], rounds[0]
        for r in [*rounds[1:], None]:
            if r is not None and r == prev + 1:
                prev = r
                continue
            spans.append(str(first) if first == prev else f"{first}-{prev}")
            if r is not None:
                first = prev = r
        parts.append(f"{method} round{'s' if len(rounds) > 1 else ''} {', '.join(spans)}")
    return "; ".join(parts)
