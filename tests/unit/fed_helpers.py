"""Federation test helpers: an in-process grid and stand-in clients (no Ray, milliseconds).

Shared by the unit tests of rounds, strategies, DP and compression.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from flwr.app import Context, Message, RecordDict

from fedvida.federation import records as R
from fedvida.federation.flower_compat import set_message_id
from fedvida.federation.node import client_seed

Handler = Callable[[Message, Context], Message]


class LocalGrid:
    """An in-process grid: every node runs a handler in a thread pool (2 workers)."""

    def __init__(self, handlers: dict[int, Handler], seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.node_ids = [int(x) for x in rng.integers(1, 2**62, size=len(handlers))]
        self.handlers = dict(zip(self.node_ids, handlers.values(), strict=True))
        self.contexts = {
            n: Context(run_id=7, node_id=n, node_config={"partition-id": p},
                       state=RecordDict(), run_config={})
            for n, p in zip(self.node_ids, handlers, strict=True)
        }
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.futures: dict[str, Future[Message]] = {}
        self.seen: list[Message] = []
        self.lock = threading.Lock()

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for msg in messages:
            mid = str(uuid.uuid4())
            set_message_id(msg, mid)
            node = msg.metadata.dst_node_id
            self.futures[mid] = self.pool.submit(self._run, node, msg)
            ids.append(mid)
        return ids

    def _run(self, node: int, msg: Message) -> Message:
        try:
            out = self.handlers[node](msg, self.contexts[node])
        except Exception as exc:  # what Flower turns a raising ClientApp into
            from flwr.app import Error

            out = Message(Error(code=0, reason=f"{type(exc).__name__}:<'{exc}'>"), reply_to=msg)
        with self.lock:
            self.seen.append(out)
        return out

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        done = [mid for mid in message_ids if mid in self.futures and self.futures[mid].done()]
        return [self.futures.pop(mid).result() for mid in done]


def _initial() -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 3)
    return {f"classifier.{k}": v.detach().numpy().copy() for k, v in lin.state_dict().items()}


def stand_in_client(fail: bool = False, sleep: float = 0.0) -> Handler:
    """A client that trains a linear model on random data seeded by (seed, round, partition)."""

    def handle(msg: Message, context: Context) -> Message:
        if sleep:
            time.sleep(sleep)
        if fail:
            raise RuntimeError("boom in /home/alice/cache/part_3.npy")
        part = int(context.node_config["partition-id"])
        conf = msg.content.config_records[R.CONFIG_KEY]
        rnd = int(conf[R.CFG_ROUND])
        seed = client_seed(0, rnd, part)
        gen = torch.Generator().manual_seed(seed)
        lin = torch.nn.Linear(6, 3)
        state = R.arrays_to_state(msg.content.array_records[R.ARRAYS_KEY])
        lin.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items()})
        x = torch.randn(10 + part, 6, generator=gen)
        y = torch.randint(0, 3, (10 + part,), generator=gen)
        opt = torch.optim.SGD(lin.parameters(), lr=0.5)
        loss = torch.nn.functional.cross_entropy(lin(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out = {f"classifier.{k}": v for k, v in lin.state_dict().items()}
        metrics = {R.WEIGHT_KEY: 10 + part, "train_loss": loss.item(), "partition-id": part}
        if part % 2:  # clients may report different metric keys (e.g. no audio losses)
            metrics["gen_loss"] = 0.5
        return Message(R.reply(R.state_to_arrays(out), metrics), reply_to=msg)

    return handle
