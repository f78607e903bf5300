"""Torch device names of the config, with ``auto`` resolved where the code runs.

``auto`` (the default of ``extract.device``, ``train.device`` and ``dictionary.device``) is
``cuda`` when ``torch.cuda.is_available()`` in the process that resolves it, else ``cpu``: the
same config uses the GPU of a GPU machine (``make demo`` without edits) and runs unchanged on a
CPU-only one. It is resolved where the work runs (an extraction, a Ray actor, a SuperNode's
ClientApp), so each process uses what it has: a Ray actor given no GPU (``num_gpus_per_client
= 0``) sees none and trains on the CPU. The choice is said once per process and field
(logger ``fedvida.devices``, INFO; a GPU choice also on the console).
"""

from __future__ import annotations

import logging
import threading

import torch

AUTO = "auto"
_said: set[str] = set()
_lock = threading.Lock()


def resolve(device: str, field: str = "device") -> str:
    """``"auto"`` -> ``"cuda"`` or ``"cpu"`` (see the module docstring); others unchanged.

    Parameters
    ----------
    device
        A torch device name (``cpu``, ``cuda``, ``cuda:1``, ...) or ``auto``.
    field
        The config field it came from, named in the one log line.
    """
    if device != AUTO:
        return device
    chosen = "cuda" if torch.cuda.is_available() else "cpu"
    with _lock:
        first = field not in _said
        _said.add(field)
    if first:
        where = f" ({torch.cuda.get_device_name(0)})" if chosen == "cuda" else ""
        logging.getLogger("fedvida.devices").info("%s: auto -> %s%s", field, chosen, where)
        if chosen == "cuda":  # on the console too: the CPU stays the quiet default
            from fedvida.reporting.console import console

            console.print(f"{field}: auto -> {chosen}{where}", markup=False)
    return chosen
