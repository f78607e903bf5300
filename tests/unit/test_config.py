"""Config loading, overrides and one-line validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedvida.cli import main
from fedvida.config import Config, load_config
from fedvida.errors import ConfigError


@pytest.mark.parametrize("name", ["default.yaml", "smoke.yaml"])
def test_shipped_configs_validate(name: str, pytestconfig: pytest.Config) -> None:
    cfg = load_config(pytestconfig.rootpath / "configs" / name)
    assert isinstance(cfg, Config)
    assert cfg.extract.steps == 18


def test_overrides_parse_yaml_values() -> None:
    cfg = load_config(
        None,
        [
            "train.epochs=3",
            "partition.withhold.clip_rate=0.25",
            "federation.shared_prefixes=[generator]",
        ],
    )
    assert cfg.train.epochs == 3
    assert cfg.partition.withhold.clip_rate == 0.25
    assert cfg.federation.shared_prefixes == ["generator"]


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("partition.alpha=-1", "partition.alpha"),
        ("train.methods=[magic]", "train.methods"),
        ("train.method=svdmap", "train.method' was removed; use train.methods, a list: "
                                "train.methods=[svdmap]"),
        ("federation.methods=[gt_audio]", "federation.methods' was removed; use train.methods"),
        ("train.methods=[]", "train.methods"),
        ("train.methods=[gt_audio, gt_audio]", "'gt_audio' is listed twice"),
        ("partition.withhold.clip_rate=1.5", "partition.withhold.clip_rate"),
        ("train.nonsense=1", "train.nonsense"),
        ("data.classes.mode=list", "data.classes"),
        ("train.modality_dropout_grid=[0, 1.5]", "modality_dropout_grid must list rates in"),
        ("train.modality_dropout_grid=[]", "modality_dropout_grid must list rates in"),
    ],
)
def test_invalid_values_name_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    message = str(err.value)
    assert field in message
    assert "\n" not in message


def test_bad_override_syntax_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["train.epochs"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("train:\n  epochs: 3\n  methods: [gt_audio\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML \(line 4, column 1\)"):
        load_config(broken)
    with pytest.raises(ConfigError, match="is a folder, not a YAML file"):
        load_config(tmp_path)


def test_class_selection_shorthands_as_the_readme_gives_them() -> None:
    assert load_config(None, ["data.classes=all"]).data.classes.mode == "all"
    five = load_config(None, ["data.classes=5"]).data.classes
    assert (five.mode, five.n) == ("random", 5)
    listed = load_config(None, ["data.classes=[barking, drumming]"]).data.classes
    assert (listed.mode, listed.names) == ("list", ["barking", "drumming"])
    full = load_config(None, ["data.classes.mode=random", "data.classes.n=3"]).data.classes
    assert (full.mode, full.n) == ("random", 3)


def test_cli_config_show_and_error_exit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--set", "train.epochs=7"]) == 0
    assert "epochs: 7" in capsys.readouterr().out
    assert main(["config", "show", "--set", "federation.rounds=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedvida: error:") and "federation.rounds" in err
    assert len(err.splitlines()) == 1


def test_section_hash_tracks_only_named_sections() -> None:
    a = load_config(None, [])
    b = load_config(None, ["train.epochs=5"])
    c = load_config(None, ["extract.fps=5"])
    assert a.section_hash("extract") == b.section_hash("extract")
    assert a.section_hash("extract") != c.section_hash("extract")


def test_every_list_of_method_names_is_the_config_literal() -> None:
    # Arrange: the one list (the Literal of fedvida.config) and every place that lists methods
    import argparse
    from typing import get_args

    from fedvida.cli import build_parser
    from fedvida.config import METHODS, Method, TrainConfig
    from fedvida.sweep import GroupSpec, SweepSpec
    from fedvida.training.methods import METHOD_SPECS

    parser = build_parser()

    def method_choices(*command: str) -> list[str]:
        p = parser
        for name in command:
            sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
            p = sub.choices[name]
        (action,) = [a for a in p._actions if "--method" in a.option_strings]
        return list(action.choices)

    # Act / Assert
    assert get_args(Method) == METHODS
    assert list(METHOD_SPECS) == list(METHODS)
    assert all(spec.name == name for name, spec in METHOD_SPECS.items())
    for command in (["run"], ["simulate"], ["train"]):
        assert method_choices(*command) == list(METHODS), command
    for field in (TrainConfig.model_fields["methods"], SweepSpec.model_fields["methods"],
                  GroupSpec.model_fields["methods"]):
        assert literal_values(field.annotation) == set(METHODS), field


def literal_values(tp: object) -> set[object]:
    """Every value of the Literal types inside ``tp`` (e.g. ``list[Method] | None``)."""
    from typing import Literal, get_args, get_origin

    if get_origin(tp) is Literal:
        return set(get_args(tp))
    return set().union(*(literal_values(a) for a in get_args(tp)))
