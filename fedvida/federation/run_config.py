"""Flower's ``run_config`` and ``node_config`` -> the fedvida `Config` (no flwr import).

The config itself is defined and validated in `fedvida.config`; this module only says where a
Flower app finds it (the server) and how a node points it at its own files (the client).

Flower's ``run_config`` holds flat scalars only, so it carries a config path and overrides:

* deployment (``flwr run``): ``config-path`` and ``overrides`` from ``[tool.flwr.app.config]`` in
  pyproject.toml, changed with ``flwr run . NAME --run-config "config-path='x.yaml'
  overrides='federation.rounds=3;train.methods=[gt_audio]'"`` (overrides separated by ``;``);
* simulation (``run_simulation`` leaves ``run_config`` empty): the environment variables
  ``FEDVIDA_CONFIG_PATH`` and ``FEDVIDA_OVERRIDES`` set by `fedvida.federation.runner`.

Clients never read a config file: the server sends its resolved config (YAML) in every train and
evaluate ``ConfigRecord``, so every client trains exactly the model the server aggregates. A
SuperNode's ``--node-config`` then points the client at its own local data:

* ``partition-id`` (int, required): which client of the plan this node is;
* ``data-dir`` (str, optional): a folder holding ``plan.json``, ``cache/`` and ``dictionary/``;
* ``plan``, ``cache-dir``, ``dictionary-dir`` (str, optional): the same, one by one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from fedvida.config import Config, load_config
from fedvida.errors import ConfigError
from fedvida.federation.keys import PARTITION_KEY

ENV_CONFIG = "FEDVIDA_CONFIG_PATH"
ENV_OVERRIDES = "FEDVIDA_OVERRIDES"

Scalar = int | float | str | bool | bytes


def split_overrides(text: str) -> list[str]:
    """``"a.b=1; c=2"`` -> ``["a.b=1", "c=2"]`` (``;`` or newlines separate overrides)."""
    parts = [p.strip() for chunk in text.splitlines() for p in chunk.split(";")]
    return [p for p in parts if p]


def server_config(run_config: Mapping[str, Scalar]) -> Config:
    """The config of a ServerApp: ``run_config`` in deployment, environment in simulation."""
    path = run_config.get("config-path") or os.environ.get(ENV_CONFIG)
    if not path:
        raise ConfigError(f"no fedvida config: set run_config 'config-path' or ${ENV_CONFIG}")
    overrides = str(run_config.get("overrides") or os.environ.get(ENV_OVERRIDES, ""))
    return load_config(str(path), split_overrides(overrides))


def config_from_yaml(text: str) -> Config:
    """Rebuild the server's resolved config from the YAML sent in a ConfigRecord."""
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config sent by the server is not YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError("config sent by the server is not a mapping")
    return Config.model_validate(tree)


def partition_of(node_config: Mapping[str, Scalar]) -> int:
    """The plan partition a node holds (``partition-id`` in its node config)."""
    if PARTITION_KEY not in node_config:
        raise ConfigError("node config lacks 'partition-id' (use --node-config 'partition-id=K')")
    value = node_config[PARTITION_KEY]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"node config 'partition-id' must be an integer, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"node config 'partition-id' must be an integer, got {value!r}") from None


LOCALIZED_KEYS = ("data-dir", "plan", "cache-dir", "dictionary-dir")  # what `localize` reads


def localize(cfg: Config, node_config: Mapping[str, Scalar]) -> Config:
    """Point a config at the node's own plan, feature cache and dictionary copy."""
    local = cfg.model_copy(deep=True)
    data_dir = node_config.get("data-dir")
    if data_dir:
        root = Path(str(data_dir))
        local.partition.plan = root / "plan.json"
        local.extract.cache_dir = root / "cache"
        local.dictionary.out = root / "dictionary"
    if node_config.get("plan"):
        local.partition.plan = Path(str(node_config["plan"]))
    if node_config.get("cache-dir"):
        local.extract.cache_dir = Path(str(node_config["cache-dir"]))
    if node_config.get("dictionary-dir"):
        local.dictionary.out = Path(str(node_config["dictionary-dir"]))
    return local


def run_dir(cfg: Config) -> Path:
    """The run folder of a config: ``train.runs_dir / name``."""
    return Path(cfg.train.runs_dir) / cfg.name
