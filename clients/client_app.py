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

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local training of the shared model parts, starting from the global arrays."""
    from fedvida.federation.client import guarded
    from fedvida.federation.client import train as handle

    return guarded(handle)(msg, context)


@app.evaluate()
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
