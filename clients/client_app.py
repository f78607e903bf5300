"""The fedvida ClientApp (Flower Message API): one per SuperNode / virtual client.

A thin adapter: each handler hands the message to `fedvida.federation.client`, which loads the
node's cached features, verifies the dictionary digest, trains or evaluates, and replies with the
shared model arrays and numeric metrics only. Heavy imports (torch) happen inside the handlers so
that the query message, which only asks for the node's partition id, stays cheap.

Node config (``flower-supernode --node-config``): ``partition-id`` (required) and optionally
``data-dir`` (a folder with ``plan.json``, ``cache/``, ``dictionary/``); see
`fedvida.federation.settings`.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedvida.federation.compression import compression_mod
from fedvida.federation.privacy import dp_mod
from fedvida.federation.secagg import SECAGG_ACTION, secagg_mod

app = ClientApp()


# dp_mod clips (and for local DP, noises) the update the handler returns, when the run asks;
# compression_mod is outermost: it decodes the downlink first and encodes the clipped update last
@app.train(mods=[compression_mod, dp_mod])
def train(msg: Message, context: Context) -> Message:
    """Local training of the shared model parts, starting from the global arrays."""
    from fedvida.federation.client import guarded
    from fedvida.federation.client import train as handle

    return guarded(handle)(msg, context)


# privacy.secagg: the four SecAgg+ stages of a round arrive as "train.secagg"; secagg_mod runs
# Flower's secaggplus_mod, which calls the same training (behind dp_mod: clipping before masking)
# in its collect stage and sends the update only masked
@app.train(SECAGG_ACTION, mods=[secagg_mod, dp_mod])
def train_secagg(msg: Message, context: Context) -> Message:
    """Local training whose update leaves the node only masked (SecAgg+)."""
    from fedvida.federation.client import guarded
    from fedvida.federation.client import train as handle

    return guarded(handle)(msg, context)


@app.evaluate(mods=[compression_mod])  # decodes a float16 downlink (communication.downlink)
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluation of the global model on this node's local data."""
    from fedvida.federation.client import evaluate as handle
    from fedvida.federation.client import guarded

    return guarded(handle)(msg, context)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Report this node's partition id, so that the server can sample clients by plan index."""
    from fedvida.federation.client import guarded, identify

    return guarded(identify)(msg, context)
