"""``device: auto``: the GPU when torch sees one, else the CPU, said once (tested on CPU by
making torch report a GPU)."""

from __future__ import annotations

import logging

import pytest
import torch

from fedvida import devices
from fedvida.config import Config
from fedvida.features.encoders import resolve_device


def test_auto_is_the_default_and_resolves_to_what_torch_sees(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Arrange: the defaults a `make demo` runs with
    cfg = Config()
    assert cfg.extract.device == cfg.train.device == cfg.dictionary.device == "auto"
    monkeypatch.setattr(devices, "_said", set())
    caplog.set_level(logging.INFO, logger="fedvida.devices")
    # Act / Assert: a CPU-only machine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve("auto", "train.device") == "cpu"
    assert resolve_device("auto") == "cpu"
    assert "auto ->" not in capsys.readouterr().out  # the CPU, the quiet default
    # a GPU machine: the same config picks cuda, and says so once per field
    monkeypatch.setattr(devices, "_said", set())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Stand-in GPU")
    caplog.clear()
    assert [devices.resolve("auto", "train.device") for _ in range(3)] == ["cuda"] * 3
    assert resolve_device("auto") == "cuda"
    assert [r.getMessage() for r in caplog.records] == [
        "train.device: auto -> cuda (Stand-in GPU)", "extract.device: auto -> cuda (Stand-in GPU)"]
    assert capsys.readouterr().out.count("train.device: auto -> cuda (Stand-in GPU)") == 1
    # an explicit device is kept as written
    assert devices.resolve("cpu") == "cpu" and devices.resolve("cuda:1") == "cuda:1"


def test_an_unknown_extract_device_is_refused_by_the_config() -> None:
    from fedvida.config import load_config
    from fedvida.errors import ConfigError

    with pytest.raises(ConfigError, match="extract.device"):
        load_config(None, ["extract.device=gpu"])
