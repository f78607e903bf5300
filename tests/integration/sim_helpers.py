"""Simulation harness of the integration tests: a test's own ServerApp main in a Ray
simulation (the product ClientApp by default), and a grid that records every message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from fedvida.config import Config
from fedvida.federation.flower_compat import fast_message_pickup, replace_dead_actors
from fedvida.federation.runner import (
    CLIENT_APP,
    ChildWatch,
    backend_config,
    flower_environment,
    load_component,
)


class RecordingGrid:
    """Passes everything to the real grid and keeps every message a client sent back."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.sent: list[Message] = []
        self.received: list[Message] = []

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        msgs = list(messages)
        self.sent.extend(msgs)
        return self.grid.push_messages(msgs)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        got = list(self.grid.pull_messages(message_ids))
        self.received.extend(got)
        return got


def simulate_server(
    main: Callable[[Grid], None], cfg: Config, client_app: ClientApp | None = None,
    num_supernodes: int = 4,
) -> tuple[list[int], ChildWatch]:
    """Run ``main(grid)`` as the ServerApp of a Flower simulation with ``cfg``'s Ray settings.

    Every Ray process of the run is reaped afterwards (by this run's `ChildWatch` token, so
    other jobs' Ray processes are never touched). Returns the pids that had to be ended and
    the watch.
    """
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        main(grid)

    flower_environment()
    watch = ChildWatch()
    watch.start()
    try:
        # as `runner.simulate_config` runs the product's simulation
        with fast_message_pickup(), replace_dead_actors():
            run_simulation(server_app=server_app,
                           client_app=client_app or load_component(CLIENT_APP),
                           num_supernodes=num_supernodes,
                           backend_config=backend_config(cfg))  # type: ignore[arg-type]
    finally:
        ended = watch.stop_and_reap()
    return ended, watch


def stable_line(line: Any) -> Any:
    """A metrics.jsonl line without what varies run to run (wall times)."""
    if isinstance(line, dict):
        return {k: stable_line(v) for k, v in line.items()
                if "seconds" not in k and k != "finished_at"}
    return line


def assert_resumed_log(resumed: list[dict[str, Any]], original: list[dict[str, Any]],
                       rerun: tuple[str, int], name_delta: int) -> None:
    """Every (method, round) once and in order, every line equal to the uninterrupted run's.

    ``rerun``: the (method, round) the resumed process ran again; its messages carry the
    config with the resumed run's name, ``name_delta`` characters longer, once per message down.
    """
    assert [(ln["method"], ln["round"]) for ln in resumed] == [
        (ln["method"], ln["round"]) for ln in original]
    for got, want in zip(resumed, original, strict=True):
        got, want = stable_line(got), stable_line(want)
        if (got["method"], got["round"]) == rerun:
            for key in ("bytes_down", "bytes_down_train"):
                assert got.pop(key) - want.pop(key) == want["sampled"] * name_delta, key
            if "validation" in want:  # the final validation exchange asks every node
                down = got["validation"].pop("bytes_down") - want["validation"].pop("bytes_down")
                assert down == want["validation"]["clients"] * name_delta
        assert got == want
