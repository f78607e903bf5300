"""Scale of the federated simulation: 10, 100, 1000 virtual clients on cached features.

Usage (after `fedvida partition`, `fedvida extract --all` and `fedvida dictionary build` for
CONFIG; the smoke or demo config)::

    python bench/simulation.py --config configs/smoke.yaml [--clients 10 100 1000] [--rounds 3]

For N clients the bench writes a plan whose client k holds the clips of base client k mod B (the
B clients of the config's plan), links the shared feature store and points partition k's cache
folder at base k's packs (symlinks), so every virtual client reads real cached features, lazily,
when sampled.
Each round samples ``--per-round`` clients (fraction = per-round / N). It prints, per N:
wall time per round after the first (warm-up), the clients' pure training time, their ratio
(round time / (training time / parallel clients)), bytes per round and the peak memory (RSS) of
the driver plus every Ray process of the run.

"round s" is the whole round as the run experiences it: the wall time between the ends of
consecutive rounds (``finished_at`` in metrics.jsonl), from round 1's end to the last round's
end, divided by the number of rounds after the first. It includes sending, the clients'
training, metering, aggregation, the server's evaluation on the test split, the checkpoint and
the log line (the server overlaps the last three with the next round's training). "exchange s"
is the send-to-last-reply part alone and "server eval s" the evaluation's own duration.
"train s / worker" is the sum of the clients' ``fit-seconds`` (``train_local`` only: their
forward/backward passes) divided by the number of parallel Ray actors.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil

from fedvida.config import load_config
from fedvida.data.partition import Plan
from fedvida.federation.runner import ChildWatch, run_federated
from fedvida.reporting.console import print_table
from fedvida.reporting.runlog import RunLog


class PeakMemory(threading.Thread):
    """Samples the summed RSS of this process and the processes of the running simulation.

    The processes are those carrying the `ChildWatch` token of the simulation in their
    environment; each process on the machine is judged once, so a sample costs one RSS read per
    process of the run (the bench must not steal the actors' CPU it measures).
    """

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self.stop = interval, 0, threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        members: dict[tuple[int, float], psutil.Process] = {}
        judged: set[tuple[int, float]] = set()
        token = None
        while not self.stop.is_set():
            current = os.environ.get(ChildWatch.TOKEN_VAR)
            if current != token:  # a new simulation: judge every process again
                token, members, judged = current, {}, set()
            if token:
                for proc in psutil.process_iter():
                    try:
                        key = (proc.pid, proc.create_time())
                        if key in judged or key in members or proc.pid == me.pid:
                            continue
                        if proc.environ().get(ChildWatch.TOKEN_VAR) == token:
                            members[key] = proc
                        elif time.time() - key[1] > ChildWatch.SETTLE_S:  # not mid-exec
                            judged.add(key)
                    except psutil.Error:
                        continue
            total = me.memory_info().rss
            for key, proc in list(members.items()):
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    members.pop(key)
            self.peak = max(self.peak, total)
            self.stop.wait(self.interval)


def virtual_plan(base: Plan, n: int) -> Plan:
    """A plan of ``n`` clients, client k holding base client (k mod B)'s clips."""
    clients = [list(base.clients[k % base.num_clients]) for k in range(n)]
    rates = [base.client_rates[k % base.num_clients] for k in range(n)]
    return Plan(base.dataset_root, base.classes, clients, base.test, rates, base.seed,
                f"{base.config_hash}-virtual{n}")


def link_cache(cache: Path, out: Path, base_clients: int, n: int) -> None:
    """Cache folder for ``n`` clients: symlinks to the shared store and the base clients' packs
    (virtual client k has base client k mod B's clips in its order: the same view)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("store", "test", *[str(k) for k in range(base_clients)]):
        src = (cache / name).resolve()
        if not (out / name).exists():
            (out / name).symlink_to(src, target_is_directory=True)
    for k in range(base_clients, n):
        dst = out / str(k)
        if not dst.exists():
            dst.symlink_to((cache / str(k % base_clients)).resolve(), target_is_directory=True)


def bench(config: str, sizes: list[int], rounds: int, per_round: int, method: str,
          overrides: list[str]) -> None:
    base_cfg = load_config(config, overrides)
    base = Plan.load(base_cfg.partition.plan)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedvida-bench-") as tmp:
        for n in sizes:
            cfg = base_cfg.model_copy(deep=True)
            work = Path(tmp) / f"n{n}"
            cfg.partition.plan = work / "plan.json"
            virtual_plan(base, n).save(cfg.partition.plan)
            link_cache(Path(base_cfg.extract.cache_dir), work / "cache", base.num_clients, n)
            cfg.extract.cache_dir = work / "cache"
            cfg.train.runs_dir = work / "runs"
            cfg.federation.rounds = rounds
            cfg.federation.fraction_train = min(1.0, per_round / n)
            cfg.federation.min_train_clients = min(per_round, n)
            cfg.federation.ray_num_cpus = cfg.federation.ray_num_cpus or 2
            # round time only: no final validation exchange with every node (select_round)
            cfg.federation.select_round = "last"
            mem = PeakMemory()
            mem.start()
            t0 = time.perf_counter()
            run_federated(cfg, [method], f"bench{n}")
            total = time.perf_counter() - t0
            mem.stop.set()
            mem.join()
            lines = RunLog(work / "runs" / f"bench{n}").rounds(method)
            warm = lines[1:] or lines
            par = max(1.0, min(cfg.federation.ray_num_cpus / cfg.federation.num_cpus_per_client,
                               warm[0]["sampled"]))
            if len(lines) > 1:
                rnd = (lines[-1]["finished_at"] - lines[0]["finished_at"]) / (len(lines) - 1)
            else:
                rnd = lines[0]["seconds"]
            exch = sum(ln["exchange_seconds"] for ln in warm) / len(warm)
            ev = sum(ln["eval_seconds"] for ln in warm) / len(warm)
            fit = sum(ln["train_seconds"] for ln in warm) / len(warm)
            rows.append([n, warm[0]["sampled"], lines[0]["seconds"], rnd, exch, ev, fit / par,
                         rnd / max(fit / par, 1e-9), warm[0]["bytes_down"] / 1e6,
                         warm[0]["bytes_up"] / 1e6, mem.peak / 2**30, total])
            print(json.dumps({"clients": n, "round_s": rnd, "exchange_s": exch, "eval_s": ev,
                              "fit_s_per_worker": fit / par, "overhead": rnd / (fit / par),
                              "peak_gib": mem.peak / 2**30, "total_s": total}), flush=True)
    print_table(
        "Simulation scale (Ray, cached features; rounds after the first)",
        ["clients", "per round", "round 1 s", "round s", "exchange s", "server eval s",
         "train s / worker", "overhead x", "MB down", "MB up", "peak GiB", "total s"], rows,
        caption="overhead x = round wall time / (clients' training time / parallel actors)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/smoke.yaml")
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--method", default="gt_audio")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="config override (repeatable)")
    args = parser.parse_args()
    bench(args.config, args.clients, args.rounds, args.per_round, args.method, args.overrides)


if __name__ == "__main__":
    main()
