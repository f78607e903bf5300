"""Device handling without a GPU: every training method under `DeviceGuard` (see device_guard.py).

On CUDA, a CPU tensor joined with tensors on the model's device raises; on CPU it passes
silently. The guard raises there too, so that such bugs are caught on a CPU-only machine.
"""

from __future__ import annotations

import pytest
import torch
from device_guard import DeviceGuard, DeviceMixError
from test_training import CLASSES, dims, small_cfg, synthetic

from fedvida.config import METHODS
from fedvida.models.container import build_model
from fedvida.semantics import SemanticDictionary, build_dictionary, load_sentence_embedder
from fedvida.training.local import evaluate, train_local

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def guard_dictionary(tmp_path_factory: pytest.TempPathFactory) -> SemanticDictionary:
    return build_dictionary(
        CLASSES, tmp_path_factory.mktemp("dict") / "dictionary",
        embedder=load_sentence_embedder("all-MiniLM-L6-v2"),
        action_template="a video of someone {action}", audio_template="the sound of {label}",
    )


def test_the_guard_catches_a_host_tensor_joined_with_the_model() -> None:
    lin = torch.nn.Linear(4, 2)
    with DeviceGuard():
        device = torch.device("cpu")  # stands for cuda
        lin.to(device)
        lin(torch.randn(3, 4).to(device))  # moved: fine
        with pytest.raises(DeviceMixError, match="linear"):
            lin(torch.randn(3, 4))  # forgot .to(device)
        host = torch.zeros(2)
        made_like_host = torch.full((2,), 1.0, device=host.device)
        with pytest.raises(DeviceMixError, match="add"):
            _ = lin(torch.ones(2, 4).to(device))[:, 0] + made_like_host


@pytest.mark.parametrize("method", METHODS)
def test_every_method_keeps_its_tensors_on_the_model_device(
    method: str, guard_dictionary: SemanticDictionary
) -> None:
    # Arrange
    train, test = synthetic(32, 0, guard_dictionary), synthetic(16, 1, guard_dictionary)
    cfg = small_cfg(f"train.method={method}")
    model = build_model(cfg, dims(train))
    # Act / Assert: no DeviceMixError while training and evaluating
    with DeviceGuard() as guard:
        train_local(model, train, cfg, guard_dictionary, epochs=1, seed=0, class_names=CLASSES)
        evaluate(model, test, cfg, guard_dictionary, class_names=CLASSES)
    assert guard.ops > 100
