"""`fedvida deploy` wrappers without starting Flower: what they print, write and name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fedvida.cli import main
from fedvida.federation.server import resume_message


def test_superlink_print_writes_no_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr"))
    assert main(["deploy", "superlink", "--certs", str(tmp_path / "certs"), "--print"]) == 0
    out = capsys.readouterr().out
    assert "[superlink.fedvida]" in out and 'address = "127.0.0.1:8000"' in out
    assert "flower-superlink" in out
    assert not (tmp_path / "flwr" / "config.toml").exists()


def test_deploy_run_gets_a_new_folder_name_each_time_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr"))
    calls: list[list[str]] = []

    def fake_call(cmd: list[str]) -> int:
        calls.append(cmd)
        return 0

    monkeypatch.setattr("fedvida.commands.deploy.call_forwarding", fake_call)
    # Act: the same command twice, then with --resume and --name
    assert main(["deploy", "run", "--set", "federation.rounds=2"]) == 0
    first = capsys.readouterr().out
    import time

    time.sleep(1.1)
    assert main(["deploy", "run", "--set", "federation.rounds=2"]) == 0
    assert main(["deploy", "run", "--resume", "demo-x"]) == 0
    assert main(["deploy", "run", "--name", "mine"]) == 0
    # Assert: distinct timestamped names by default; --resume / --name as given
    names = [re.search(r"name=([^;']+)", " ".join(c)).group(1) for c in calls]  # type: ignore[union-attr]
    assert re.fullmatch(r"demo-\d{8}-\d{6}", names[0]) and names[0] != names[1]
    assert names[2:] == ["demo-x", "mine"]
    assert "federation.rounds=2" in " ".join(calls[0])
    # the wrapper says where the run folder is and how to continue it
    assert f"run folder: runs/{names[0]}" in first and f"--resume {names[0]}" in first


def test_deploy_run_checks_the_config_before_flwr_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("fedvida.commands.deploy.call_forwarding",
                        lambda cmd: pytest.fail("flwr run started"))
    assert main(["deploy", "run", "--set", "federation.rounds=0"]) == 2
    assert "federation.rounds" in capsys.readouterr().err


def test_a_resumed_run_says_what_is_left() -> None:
    folder = Path("runs/demo")
    assert resume_message("gt_audio", 2, 5, folder) == (
        "gt_audio: resuming runs/demo after round 2, rounds 3-5 of 5")
    assert resume_message("gt_audio", 5, 5, folder) == (
        "gt_audio: all 5 rounds done in runs/demo, nothing to run")


def test_supernode_and_superlink_become_the_flower_process() -> None:
    # exec, not a child: the pid a service manager signals is Flower's (no orphan on SIGTERM)
    import inspect

    from fedvida.commands import deploy

    for handler in (deploy._supernode, deploy._superlink):
        assert "replace=True" in inspect.getsource(handler)


def test_a_node_extract_with_a_missing_clips_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a node's `fedvida extract --clips DIR` (docs/deployment.md, "N nodes"): checked first
    assert main(["extract", "--client", "0", "--clips", str(tmp_path / "my-clips")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"fedvida: error: --clips {tmp_path / 'my-clips'}: not a folder"


def test_simulate_prints_the_flwr_run_command_of_the_same_simulation(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import shlex
    from types import SimpleNamespace

    from fedvida.config import load_config
    from fedvida.federation.flower_compat import parse_config_args
    from fedvida.federation.run_config import server_config, split_overrides

    monkeypatch.setattr("fedvida.data.partition.Plan.load",
                        classmethod(lambda cls, path: SimpleNamespace(num_clients=3)))
    # Act
    assert main(["simulate", "--config", "configs/smoke.yaml", "--set", "federation.rounds=2",
                 "--method", "gt_audio", "--name", "twin", "--print-flwr-run", "sim"]) == 0
    argv = shlex.split(capsys.readouterr().out)
    # Assert: Flower's own parsers read one SuperNode per plan client and the Ray resources,
    # and the ServerApp resolves the config simulate would run (name, method, override)
    assert argv[:4] == ["flwr", "run", ".", "sim"] and "--stream" in argv
    fed = parse_config_args(argv[argv.index("--federation-config") + 1])
    smoke = load_config("configs/smoke.yaml")
    assert fed["num-supernodes"] == 3 and fed["backend"] == "ray"
    assert fed["client-resources-num-cpus"] == smoke.federation.num_cpus_per_client
    run_config = parse_config_args(argv[argv.index("--run-config") + 1])
    cfg = server_config(run_config)
    assert run_config["config-path"] == "configs/smoke.yaml"
    assert split_overrides(str(run_config["overrides"]))[0] == "federation.rounds=2"
    assert cfg.name == "twin" and cfg.train.methods == ["gt_audio"]
    assert cfg.federation.rounds == 2
    # --resume: one line saying what to do instead
    assert main(["simulate", "--resume", "runs/twin", "--print-flwr-run"]) == 2
    assert "--print-flwr-run with --resume" in capsys.readouterr().err
