"""The container, its parts and the state that travels."""

from __future__ import annotations

import pytest
import torch

from fedvida.config import load_config
from fedvida.models.container import (
    PREFIXES,
    FeatureDims,
    ModelStateError,
    build_model,
    load_state,
    select_state,
)
from fedvida.models.generator import condition_weights
from fedvida.training.local import cpu_threads
from fedvida.training.losses import generator_loss

DIMS = FeatureDims(rgb=1280, flow=1280, audio=1024, steps=18, num_classes=5, num_tags=527)


def test_parts_map_shapes() -> None:
    # Arrange
    model = build_model(load_config(), DIMS)
    b, t = 3, DIMS.steps
    visual = torch.randn(b, t, DIMS.rgb + DIMS.flow)  # (B, T, 2D)
    audio = torch.randn(b, t, DIMS.audio)  # (B, T, Da)
    cond = torch.zeros(b, DIMS.num_tags)
    cond[:, 3] = 1.0
    # Act
    proj = model.audio_proj(audio)
    gen = model.generator(visual, cond, torch.ones(b, t), torch.randn(b, t, 16))
    logits = model.classifier(visual, proj, torch.tensor([True, False, True]))
    tags = model.tagger(gen)
    # Assert
    assert proj.shape == (b, t, 128)
    assert gen.shape == (b, t, 128)
    assert logits.shape == (b, DIMS.num_classes)
    assert tags.shape == (b, DIMS.num_tags)
    # LayerNorm without affine: each projected step has zero mean, unit variance.
    assert torch.allclose(proj.mean(dim=2), torch.zeros(b, t), atol=1e-5)


def test_state_keys_are_prefixed_and_selectable() -> None:
    model = build_model(load_config(), DIMS)
    prefixes = {k.split(".", 1)[0] for k in model.state_dict()}
    assert prefixes == set(PREFIXES)
    shared = select_state(model, ["generator", "classifier"])
    assert shared and all(k.split(".", 1)[0] in {"generator", "classifier"} for k in shared)
    with pytest.raises(ModelStateError, match="unknown model prefix"):
        select_state(model, ["decoder"])


def test_build_is_seeded_and_load_state_is_partial_and_strict() -> None:
    # Arrange
    cfg = load_config()
    a, b = build_model(cfg, DIMS), build_model(cfg, DIMS)
    c = build_model(load_config(None, ["train.seed=1"]), DIMS)
    # Assert: same seed, same weights; another seed, other weights
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
    assert not torch.equal(a.classifier.out.weight, c.classifier.out.weight)
    # Act: load only the classifier of c into a
    load_state(a, select_state(c, ["classifier"]))
    assert torch.equal(a.classifier.out.weight, c.classifier.out.weight)
    assert torch.equal(a.generator.out.weight, b.generator.out.weight)  # untouched
    # Strict on the given keys
    with pytest.raises(ModelStateError, match="not in the model"):
        load_state(a, {"classifier.nope": torch.zeros(1)})
    with pytest.raises(ModelStateError, match="shape"):
        load_state(a, {"classifier.out.bias": torch.zeros(7)})


def test_selected_state_is_a_copy() -> None:
    model = build_model(load_config(), DIMS)
    state = select_state(model, ["tagger"])
    with torch.no_grad():
        model.tagger.out.bias.add_(1.0)
    assert not torch.equal(state["tagger.out.bias"], model.tagger.out.bias)


def test_condition_weights_peak_at_anchors_and_decay() -> None:
    rep = torch.zeros(2, 6, dtype=torch.bool)
    rep[0, 2] = True  # one anchor at step 2; clip 1 has none
    w = condition_weights(rep, decay=0.5)
    assert w[0].tolist() == [0.25, 0.5, 1.0, 0.5, 0.25, 0.125]
    assert w[1].tolist() == [1.0] * 6


def test_generator_loss_falls_on_a_small_batch() -> None:
    # Arrange: a fixed batch whose audio target depends on the video
    torch.manual_seed(0)
    model = build_model(load_config(), DIMS)
    visual = torch.randn(8, DIMS.steps, DIMS.rgb + DIMS.flow)
    target = model.audio_proj(torch.randn(8, DIMS.steps, DIMS.audio)).detach()
    mask = torch.ones(8, dtype=torch.bool)
    optim = torch.optim.Adam(model.generator.parameters(), lr=3e-3)
    losses = []
    # Act
    with cpu_threads(1):
        for _ in range(40):
            loss, _, _ = generator_loss(model.generator(visual), target, mask)
            optim.zero_grad()
            loss.backward()
            optim.step()
            losses.append(float(loss.detach()))
    # Assert
    assert losses[-1] < 0.5 * losses[0]
    assert all(torch.isfinite(torch.tensor(losses)))


def test_generator_loss_is_zero_without_masked_clips_and_still_backpropagates() -> None:
    gen = torch.randn(2, 4, 8, requires_grad=True)
    loss, mse, cos = generator_loss(gen, torch.randn(2, 4, 8), torch.zeros(2, dtype=torch.bool))
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(mse) == 0.0 and float(cos) == 0.0
    assert gen.grad is not None
