"""Device handling without a GPU: every training method under `DeviceGuard` (see device_guard.py).

On CUDA, a CPU tensor joined with tensors on the model's device raises; on CPU it passes
silently. The guard raises there too, so that such bugs are caught on a CPU-only machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from device_guard import DeviceGuard, DeviceMixError
from media_helpers import write_tiny_hf_models
from small_config import SmallConfig
from test_training import CLASSES, SMALL, dims, synthetic

from fedvida.config import METHODS, load_config
from fedvida.features.captions import create_captioner
from fedvida.features.encoders import create_audio_encoder, create_frame_encoder
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
    method: str, guard_dictionary: SemanticDictionary, small_config: SmallConfig
) -> None:
    # Arrange
    train, test = synthetic(32, 0, guard_dictionary), synthetic(16, 1, guard_dictionary)
    cfg = small_config(*SMALL)
    model = build_model(cfg, dims(train))
    # Act / Assert: no DeviceMixError while training and evaluating
    with DeviceGuard() as guard:
        train_local(model, train, cfg, guard_dictionary, method=method, epochs=1, seed=0,
                    class_names=CLASSES)
        evaluate(model, test, cfg, guard_dictionary, method=method, class_names=CLASSES)
    assert guard.ops > 100


@pytest.mark.parametrize(("frame", "audio", "captioner"), [
    ("effnet-lite0", "yamnet", "pseudo"), ("hf-vit", "hf-ast", "hf-blip")])
def test_every_encoder_keeps_its_tensors_on_its_device(
    frame: str, audio: str, captioner: str, tmp_path: Path
) -> None:
    # Arrange: the torch path of effnet-lite0 (the one CUDA runs), tiny local HF models
    hf = write_tiny_hf_models(tmp_path / "hf")
    cfg = load_config(None, [
        f"extract.frame_encoder={frame}", f"extract.audio_encoder={audio}",
        f"extract.captioner={captioner}", "extract.cpu_runtime=torch",
        f"extract.hf_vit_path={hf['vit']}", f"extract.hf_ast_path={hf['ast']}",
        f"extract.hf_blip_path={hf['blip']}"]).extract
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    waves = [rng.normal(size=16000 * 2).astype(np.float32) * 0.1 for _ in range(2)]
    # Act / Assert: loading (the models' .to(device)) and encoding under the guard
    with DeviceGuard(model_device="cpu") as guard:
        enc = create_frame_encoder(cfg, "cpu")
        feats, logits = enc.encode(images)
        emb, _ = create_audio_encoder(cfg, "cpu").encode(waves, 16000, 18)
        texts = create_captioner(cfg, enc, "cpu").caption(
            [images[:2]], [logits[:2] if logits is not None else None],
            [np.ones(2, np.float32)])
    assert feats.shape[0] == 3 and emb.shape[:2] == (2, 18) and len(texts) == 1
    assert guard.ops > 50
