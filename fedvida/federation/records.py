"""What travels: conversions between model state, Flower records and flat config values.

The keys are named in `fedvida.federation.keys`. A train message from the server carries one
``ArrayRecord`` ("arrays": the method's shared parts of the model container) and one
``ConfigRecord`` ("config": round, method, epochs, the dictionary digest, the resolved fedvida
config as YAML). A reply carries one ``ArrayRecord`` and one ``MetricRecord``
("metrics": numbers only). Nothing else may leave a client; `check_reply` enforces it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedvida.federation.codecs import CODEC_SEP as CODEC_SEP
from fedvida.federation.codecs import CODEC_SUFFIXES as CODEC_SUFFIXES
from fedvida.federation.codecs import shared_key as shared_key

# message keys are defined in fedvida.federation.keys; re-exported so that ``R.ARRAYS_KEY`` reads
from fedvida.federation.keys import ARRAYS_KEY as ARRAYS_KEY
from fedvida.federation.keys import CFG_DIGEST as CFG_DIGEST
from fedvida.federation.keys import CFG_EPOCHS as CFG_EPOCHS
from fedvida.federation.keys import CFG_METHOD as CFG_METHOD
from fedvida.federation.keys import CFG_PROX as CFG_PROX
from fedvida.federation.keys import CFG_ROUND as CFG_ROUND
from fedvida.federation.keys import CFG_VALIDATE as CFG_VALIDATE
from fedvida.federation.keys import CFG_YAML as CFG_YAML
from fedvida.federation.keys import CONFIG_KEY as CONFIG_KEY
from fedvida.federation.keys import METRICS_KEY as METRICS_KEY
from fedvida.federation.keys import WEIGHT_KEY as WEIGHT_KEY

if TYPE_CHECKING:
    import torch

_PATH_RE = re.compile(r"(?:[A-Za-z]:)?(?:[\w.~-]*[/\\])+[\w.~-]*")


def state_to_arrays(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """Model tensors -> ``ArrayRecord`` (keys kept, CPU float arrays, sorted by key)."""
    return ArrayRecord(
        {k: Array(state[k].detach().cpu().contiguous().numpy()) for k in sorted(state)}
    )


def arrays_to_state(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """``ArrayRecord`` -> model tensors (copies, writable).

    ``Array.numpy()`` already decodes the serialized bytes into a new writable array, so the
    tensors share memory with nothing else and no second copy is made.
    """
    import torch

    out = {}
    for k, v in record.items():
        arr = v.numpy()
        if not arr.flags.writeable:  # never the case for Flower 1.39's np.load; stay safe
            arr = arr.copy()
        out[k] = torch.from_numpy(arr)
    return out


def arrays_to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """``ArrayRecord`` -> numpy arrays keyed by name."""
    return {k: v.numpy() for k, v in record.items()}


def numpy_to_arrays(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """numpy arrays -> ``ArrayRecord`` (sorted by key)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(arrays[k])) for k in sorted(arrays)})


def metrics_record(values: Mapping[str, float | int]) -> MetricRecord:
    """A ``MetricRecord`` of the finite numeric values (ints stay ints, others become floats)."""
    out: dict[str, int | float] = {}
    for key, value in values.items():
        if isinstance(value, bool | int | np.integer):
            out[key] = int(value)
        elif isinstance(value, float | np.floating) and math.isfinite(float(value)):
            out[key] = float(value)
    return MetricRecord(out)  # type: ignore[arg-type]


def instruction(
    arrays: ArrayRecord, config: Mapping[str, int | float | str | bool]
) -> RecordDict:
    """The content of a train/evaluate message: model arrays + flat config."""
    return RecordDict({ARRAYS_KEY: arrays, CONFIG_KEY: ConfigRecord(dict(config))})


def reply(arrays: ArrayRecord | None, metrics: Mapping[str, float | int]) -> RecordDict:
    """The content of a client reply: model arrays (train only) + numeric metrics."""
    content: dict[str, ArrayRecord | MetricRecord] = {METRICS_KEY: metrics_record(metrics)}
    if arrays is not None:
        content[ARRAYS_KEY] = arrays
    return RecordDict(content)  # type: ignore[arg-type]


def sanitize_reason(text: str, limit: int = 300) -> str:
    """An error reason fit to leave a client: first line, file paths masked, bounded length."""
    first = text.strip().splitlines()[0] if text.strip() else "error"
    return _PATH_RE.sub("<path>", first)[:limit]


def check_reply(content: RecordDict, allowed_arrays: Iterable[str]) -> list[str]:
    """Privacy boundary: list what in a client reply is not allowed (empty list = fine).

    Allowed: at most one ``ArrayRecord`` whose keys are all in ``allowed_arrays`` (or encoded
    parts ``k::<part>`` of such a key, see `shared_key`), one ``MetricRecord`` of numbers, and
    no ``ConfigRecord`` (no strings, so no paths or captions).
    """
    allowed = set(allowed_arrays)
    bad: list[str] = []
    if content.config_records:
        bad.append(f"config records {sorted(content.config_records)}")
    for name, rec in content.array_records.items():
        extra = sorted(k for k in rec if shared_key(k) not in allowed)
        if extra:
            bad.append(f"array record '{name}' has non-shared keys {extra[:3]}")
    for name, met in content.metric_records.items():
        for key, value in met.items():
            if not isinstance(value, int | float | list):
                bad.append(f"metric '{name}.{key}' is {type(value).__name__}")
            if _PATH_RE.fullmatch(key):
                bad.append(f"metric key '{key}' looks like a path")
    unknown = set(content.keys()) - set(content.array_records) - set(content.metric_records)
    unknown -= set(content.config_records)
    if unknown:
        bad.append(f"unexpected records {sorted(unknown)}")
    return bad
