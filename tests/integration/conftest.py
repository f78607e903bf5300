"""Fixture of the federation tests: the tiny demo, partitioned, extracted, with a dictionary.

Built once per session with the real pipeline (plan -> EfficientNet-Lite0 / YAMNet features ->
MiniLM dictionary); extraction dominates its cost, so every federated test shares it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedvida.config import Config, DemoConfig, load_config

FED_CLIENTS = 4


def fed_sets(tiny_demo: Path, work: Path) -> list[str]:
    """Config overrides that point every stage at ``work`` and keep the model small."""
    return [
        f"data.root={tiny_demo}",
        f"partition.plan={work / 'plan.json'}",
        f"extract.cache_dir={work / 'cache'}",
        f"dictionary.out={work / 'dictionary'}",
        f"train.runs_dir={work / 'runs'}",
        f"partition.num_clients={FED_CLIENTS}",
        "partition.scheme=iid",
        "partition.min_clips_per_client=2",
        "train.batch_size=8",
        "model.hidden=32",
        "model.visual_dim=32",
        "federation.rounds=2",
        "federation.local_epochs=1",
        "federation.min_train_clients=2",
        "federation.ray_num_cpus=2",
    ]


def _prepare(cfg: Config) -> Config:
    """Plan, features (every client and the test split) and dictionary of ``cfg``."""
    from fedvida.data.mit import load_dataset
    from fedvida.data.partition import make_plan
    from fedvida.features.extract import Models, extract_partition
    from fedvida.semantics import build_dictionary, load_sentence_embedder, resolve_actions

    plan = make_plan(load_dataset(cfg.data), cfg.partition)
    plan.save(cfg.partition.plan)
    models = Models(cfg.extract)
    for part in [*range(plan.num_clients), "test"]:
        extract_partition(cfg, plan, part, models)
    models.close()  # the decode worker processes
    actions, _ = resolve_actions(cfg)
    build_dictionary(actions, cfg.dictionary.out, embedder=load_sentence_embedder(
        cfg.dictionary.model), action_template=cfg.dictionary.action_template,
        audio_template=cfg.dictionary.audio_template, top_k=cfg.dictionary.top_k)
    return cfg


@pytest.fixture(scope="session")
def fed_pipeline(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """A config whose plan, feature cache and dictionary exist (treat them as read-only)."""
    work = tmp_path_factory.mktemp("fed-work")
    return _prepare(load_config(None, fed_sets(tiny_demo, work)))


# Learnable, still small: 4 classes (two visual pairs that only audio tells apart) x 8 training
# clips, 4 test clips per class, every clip with a clean audio track; a quarter of the training
# clips' audio withheld, half of the test clips'. The tiny demo (4 training clips per class,
# 8 test clips) is too small to learn anything that generalises.
LEARNABLE_DEMO = DemoConfig(classes=4, clips_per_class=8, val_clips_per_class=4, seed=0,
                            no_stream_rate=0.0, silent_rate=0.0, weak_audio_rate=0.0,
                            ambiguous_video_rate=0.0, visual_identity="pair", workers=1)


@pytest.fixture(scope="session")
def learnable_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """Like `fed_pipeline`, on `LEARNABLE_DEMO` with 2 clients (treat it as read-only)."""
    from fedvida.data.demo import write_demo_dataset

    work = tmp_path_factory.mktemp("learn-work")
    write_demo_dataset(LEARNABLE_DEMO, work / "demo")
    return _prepare(load_config(None, [*fed_sets(work / "demo", work),
                                       "partition.num_clients=2",
                                       "partition.withhold.clip_rate=0.25"]))
