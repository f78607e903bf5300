"""Every key fedvida's messages and node state use, in one place (no Flower import).

A Flower ``Message`` carries a ``RecordDict``; fedvida names its records and the entries of its
``ConfigRecord`` / ``MetricRecord`` with the strings below. The server writes them
(`fedvida.federation.server`, `privacy`, `compression`, `secagg`), the ClientApp reads them
(``clients/client_app.py`` and its mods) and the node's plain code reports metrics under them
(`fedvida.federation.node`). Keys that are Flower's own (the DP wrappers' ``clipping_norm``,
SecAgg+'s protocol record) stay where the Flower touch is; the derived array names of the
compression codecs (``k::<part>``) are the codecs' wire format (`fedvida.federation.codecs`).

Train message (server -> client)::

    "arrays"  ArrayRecord   the method's shared model parts (`methods.shared_parts`)
    "config"  ConfigRecord  CFG_* below, the codec keys when compressing, the DP keys under DP

Reply (client -> server)::

    "arrays"   ArrayRecord   the trained shared parts (train only)
    "metrics"  MetricRecord  numbers only; WEIGHT_KEY weighs FedAvg
"""

from __future__ import annotations

# --- records of a message ----------------------------------------------------------------------
ARRAYS_KEY = "arrays"
CONFIG_KEY = "config"
METRICS_KEY = "metrics"

# --- MetricRecord entries ----------------------------------------------------------------------
WEIGHT_KEY = "num-examples"  # FedAvg's weight (Flower's default ``weighted_by_key``)
DP_WEIGHT_KEY = "dp-weight"  # uniform aggregation weight under central DP
PARTITION_KEY = "partition-id"  # which plan partition replied (also a node-config key)

# --- ConfigRecord entries of a train/evaluate instruction (flat scalars and strings only) -------
CFG_ROUND = "server-round"
CFG_METHOD = "method"
CFG_EPOCHS = "local-epochs"
CFG_DIGEST = "dictionary-digest"
CFG_YAML = "fedvida-config"
CFG_PROX = "proximal-mu"
CFG_VALIDATE = "validate-only"  # an evaluate message asking for validation top-1 only
# compression (absent: the compression mod passes messages through)
CFG_UPLINK = "codec-uplink"
CFG_DOWNLINK = "codec-downlink"
CFG_TOPK = "codec-topk-fraction"
CFG_FEEDBACK = "codec-error-feedback"
# differential privacy
CFG_DP_MODE = "dp-mode"  # the DP mode the client mod applies
CFG_DP_SEED = "dp-noise-seed"  # seed of the client-side noise (if any)
# SecAgg+
CFG_WEIGHT_KEY = "secagg-weight-key"  # the metric the client weights its masked update by
SECAGG_ACTION = "secagg"
SECAGG_MESSAGE_TYPE = f"train.{SECAGG_ACTION}"  # routed to the ClientApp's SecAgg+ handler
MASKED_KEY = "secagg-masked"  # ArrayRecord of the masked update (bytes as Flower made them)

# --- a node's Flower Context.state: one record per method, never sent ------------------------
LOCAL_STATE_KEY = "fedvida-local"  # trained model parts that are not shared
RESIDUAL_KEY = "fedvida-residual"  # error-feedback residual of update compression


def local_state_key(method: str) -> str:
    """The ``Context.state`` record of one method's non-shared parts."""
    return f"{LOCAL_STATE_KEY}:{method}"


def residual_key(method: str) -> str:
    """The ``Context.state`` record of one method's compression residual."""
    return f"{RESIDUAL_KEY}:{method}"
