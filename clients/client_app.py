"""The fedvida ClientApp (Flower Message API): one per SuperNode / virtual client.

The app owns the record boundary, as Flower's quickstarts do: each handler reads the message's
records into plain values, calls `fedvida.federation.node` (which never imports flwr: it loads the
node's cached features, verifies the dictionary digest, trains or evaluates) and builds the reply
from what it returns: the shared model arrays and numeric metrics only. Trained parts that are
not shared stay in the node's ``Context.state``. Heavy imports (torch) happen inside the node
functions, so that the query message, which only asks for the node's partition id, stays cheap.

Node config (``flower-supernode --node-config``): ``partition-id`` (required) and optionally
``data-dir`` (a folder with ``plan.json``, ``cache/``, ``dictionary/``); see
`fedvida.federation.run_config`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from fedvida.federation import keys as K
from fedvida.federation import node
from fedvida.federation import records as R
from fedvida.federation.compression import compression_mod
from fedvida.federation.privacy import dp_mod
from fedvida.federation.run_config import partition_of
from fedvida.federation.secagg import secagg_mod

if TYPE_CHECKING:
    import numpy as np

    from fedvida.config import Config

Handler = Callable[[Message, Context], Message]
_log = logging.getLogger("fedvida.client")
app = ClientApp()


def _instruction(msg: Message, context: Context) -> tuple[
        ConfigRecord, Config, str, dict[str, np.ndarray] | None]:
    """What a train or evaluate message asks: its config entries, the config they describe
    (localized to this node), the method, and this node's kept parts of that method (numpy;
    None when it keeps none)."""
    conf = msg.content.config_records[K.CONFIG_KEY]
    method = str(conf[K.CFG_METHOD])
    kept = context.state.array_records.get(K.local_state_key(method))
    return (conf, node.instruction_config(conf, context.node_config), method,
            None if kept is None else R.arrays_to_numpy(kept))


def handle_train(msg: Message, context: Context) -> Message:
    """Records -> `node.train` -> reply: the trained shared arrays and the metrics."""
    conf, cfg, method, kept = _instruction(msg, context)
    result = node.train(
        cfg, partition_of(context.node_config), method, server_round=int(conf[K.CFG_ROUND]),  # type: ignore[arg-type]
        epochs=int(conf[K.CFG_EPOCHS]), digest=str(conf.get(K.CFG_DIGEST, "")),  # type: ignore[arg-type]
        incoming=R.arrays_to_numpy(msg.content.array_records[K.ARRAYS_KEY]),
        kept=kept, node_config=context.node_config,
        proximal_mu=float(conf.get(K.CFG_PROX, 0.0)))  # type: ignore[arg-type]
    if result.local:
        context.state[K.local_state_key(method)] = R.numpy_to_arrays(result.local)
    return Message(R.reply(R.numpy_to_arrays(result.shared), result.metrics), reply_to=msg)


def handle_evaluate(msg: Message, context: Context) -> Message:
    """Records -> `node.evaluate` -> reply: the metrics of the global model on local data."""
    conf, cfg, method, kept = _instruction(msg, context)
    metrics = node.evaluate(
        cfg, partition_of(context.node_config), method, digest=str(conf.get(K.CFG_DIGEST, "")),
        incoming=R.arrays_to_numpy(msg.content.array_records[K.ARRAYS_KEY]),
        kept=kept, node_config=context.node_config,
        server_round=int(conf[K.CFG_ROUND]) if K.CFG_ROUND in conf else None,  # type: ignore[arg-type]
        validate_only=bool(conf.get(K.CFG_VALIDATE, False)))
    return Message(R.reply(None, metrics), reply_to=msg)


def handle_query(msg: Message, context: Context) -> Message:
    """Say which plan partition this node holds (no data involved)."""
    return Message(R.reply(None, {K.PARTITION_KEY: partition_of(context.node_config)}),
                   reply_to=msg)


def guarded(handler: Handler) -> Handler:
    """Wrap a handler so that a failure leaves the node as a one-line, path-free reason.

    The full error is logged on the node; the server records the short reason (a
    `node.ClientFailure`) and the round goes on without this client.
    """

    def run(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except Exception as exc:
            _log.error("client %s failed: %s", context.node_config.get(K.PARTITION_KEY), exc)
            reason = R.sanitize_reason(f"{type(exc).__name__}: {exc}")
            raise node.ClientFailure(reason) from None

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


# dp_mod clips (and for local DP, noises) the update the handler returns, when the run asks;
# compression_mod is outermost: it decodes the downlink first and encodes the clipped update last
@app.train(mods=[compression_mod, dp_mod])
def train(msg: Message, context: Context) -> Message:
    """Local training of the shared model parts, starting from the global arrays."""
    return guarded(handle_train)(msg, context)


# privacy.secagg: the four SecAgg+ stages of a round arrive as "train.secagg"; secagg_mod runs
# Flower's secaggplus_mod, which calls the same training (behind dp_mod: clipping before masking)
# in its collect stage and sends the update only masked
@app.train(K.SECAGG_ACTION, mods=[secagg_mod, dp_mod])
def train_secagg(msg: Message, context: Context) -> Message:
    """Local training whose update leaves the node only masked (SecAgg+)."""
    return guarded(handle_train)(msg, context)


@app.evaluate(mods=[compression_mod])  # decodes a float16 downlink (communication.downlink)
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluation of the global model on this node's local data."""
    return guarded(handle_evaluate)(msg, context)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Report this node's partition id, so that the server can sample clients by plan index."""
    return guarded(handle_query)(msg, context)
