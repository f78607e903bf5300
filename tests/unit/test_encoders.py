"""Every registered encoder on real inputs: shapes, finite values, determinism, sanity checks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from media_helpers import write_tiny_hf_models

from fedvida.config import ExtractConfig
from fedvida.errors import ConfigError
from fedvida.features.captions import BlipClipCaptioner, PseudoCaptioner, pseudo_caption
from fedvida.features.effnet import EffNetLite0
from fedvida.features.encoders import (
    AUDIO_ENCODERS,
    FRAME_ENCODERS,
    create_audio_encoder,
    create_frame_encoder,
    create_tagger,
    encoder_names,
    model_identities,
    softmax,
)
from fedvida.features.hf import HfAst
from fedvida.features.yamnet import Yamnet, log_mel, mel_matrix
from fedvida.resources import audioset_labels, imagenet_labels

pytestmark = pytest.mark.slow
FRAME_NAMES, AUDIO_NAMES = encoder_names()
ASSETS = Path(__file__).resolve().parents[1] / "assets"


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_tiny_hf_models(tmp_path_factory.mktemp("hf"))


@pytest.fixture(scope="module")
def effnet() -> EffNetLite0:
    return EffNetLite0("cpu")


@pytest.fixture(scope="module")
def yamnet() -> Yamnet:
    return Yamnet("cpu")


def _cfg(hf_dirs: dict[str, Path], **kw: object) -> ExtractConfig:
    return ExtractConfig(hf_vit_path=hf_dirs["vit"], hf_ast_path=hf_dirs["ast"],
                         hf_blip_path=hf_dirs["blip"], **kw)


@pytest.mark.parametrize("name", FRAME_NAMES)
def test_every_frame_encoder(hf_dirs: dict[str, Path], name: str) -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    enc = create_frame_encoder(_cfg(hf_dirs, frame_encoder=name))
    feats, logits = enc.encode(images)
    again, _ = enc.encode(images)
    assert feats.shape == (3, enc.dim) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and np.array_equal(feats, again)
    if logits is not None:
        assert enc.label_names is not None and logits.shape == (3, len(enc.label_names))


@pytest.mark.parametrize("name", AUDIO_NAMES)
def test_every_audio_encoder(hf_dirs: dict[str, Path], name: str) -> None:
    rng = np.random.default_rng(0)
    waves = [rng.normal(0, 0.1, 48000).astype(np.float32), rng.normal(0, 0.1, 40000)
             .astype(np.float32)]
    enc = create_audio_encoder(_cfg(hf_dirs, audio_encoder=name))
    emb, tags = enc.encode(waves, 16000, 18)
    again, _ = enc.encode(waves, 16000, 18)
    assert emb.shape == (2, 18, enc.dim) and np.isfinite(emb).all()
    assert np.array_equal(emb, again)
    assert (tags is not None) == enc.tags_audioset
    if tags is not None:
        assert tags.shape == (2, 527) and ((tags >= 0) & (tags <= 1)).all()


def test_registries_hold_the_documented_encoders() -> None:
    assert {"effnet-lite0", "hf-vit"} <= set(FRAME_NAMES)
    assert {"yamnet", "hf-ast"} <= set(AUDIO_NAMES)


def test_each_registry_entry_decides_its_identity(hf_dirs: dict[str, Path],
                                                  tmp_path: Path) -> None:
    # Arrange: every frame encoder with every audio encoder as encoder and as tagger
    for frame in FRAME_NAMES:
        for audio in AUDIO_NAMES:
            cfg = _cfg(hf_dirs, frame_encoder=frame, audio_encoder=audio, tagger=audio)
            # Act
            ids = model_identities(cfg)
            # Assert: "<name>:<identity of its entry>", the tagger the configured one
            assert ids["frame"] == f"{frame}:{FRAME_ENCODERS[frame].identity(cfg)}"
            assert ids["audio"] == f"{audio}:{AUDIO_ENCODERS[audio].identity(cfg)}"
            assert ids["tagger"] == ids["audio"]
    # a model folder with other files is another identity (its features are recomputed)
    cfg = _cfg(hf_dirs, audio_encoder="hf-ast")
    before = model_identities(cfg)["audio"]
    (hf_dirs["ast"] / "extra.txt").write_text("changed")
    try:
        assert model_identities(cfg)["audio"] != before
    finally:
        (hf_dirs["ast"] / "extra.txt").unlink()
    assert model_identities(cfg)["audio"] == before


def test_the_tagger_is_the_configured_audioset_tagger(hf_dirs: dict[str, Path]) -> None:
    assert create_tagger(_cfg(hf_dirs, tagger="yamnet")).tags_audioset
    # the tiny AST's head has 3 classes, not AudioSet's: it cannot tag
    with pytest.raises(ConfigError, match=r"extract\.tagger: 'hf-ast' does not score AudioSet"):
        create_tagger(_cfg(hf_dirs, tagger="hf-ast"))
    with pytest.raises(ConfigError, match=r"extract\.tagger: unknown 'nope'"):
        create_tagger(_cfg(hf_dirs, tagger="nope"))


def test_effnet_names_a_real_photo(effnet: EffNetLite0) -> None:
    # Arrange: scikit-image's coffee photo, short side 256 then centre crop 224
    bgr = cv2.imread(str(ASSETS / "coffee.png"))
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    s = 256 / min(h, w)
    rgb = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    top, left = (rgb.shape[0] - 224) // 2, (rgb.shape[1] - 224) // 2
    img = rgb[top : top + 224, left : left + 224]
    # Act
    feats, logits = effnet.encode(img[None])
    # Assert
    assert feats.shape == (1, 1280) and logits is not None
    probs = softmax(logits)[0]
    assert imagenet_labels()[int(np.argmax(probs))] == "espresso" and probs.max() > 0.5
    caption = PseudoCaptioner(effnet, 3).caption([img[None]], [logits], [np.ones(1)])[0]
    assert caption.startswith("a video showing espresso")


def test_effnet_onnxruntime_matches_torch(effnet: EffNetLite0, tmp_path: Path) -> None:
    images = np.random.default_rng(2).integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
    fast = EffNetLite0("cpu", runtime="onnxruntime", cache_root=tmp_path)
    assert fast.session is not None and any(tmp_path.glob("effnet-lite0-*.onnx"))
    feats, logits = fast.encode(images)
    ref_feats, ref_logits = effnet.encode(images)
    assert logits is not None and ref_logits is not None
    np.testing.assert_allclose(feats, ref_feats, atol=1e-3)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-2)
    assert np.array_equal(fast.encode(images)[0], feats)


def test_pseudo_caption_wording() -> None:
    names = ("cup", "espresso", "table", "plate")
    assert pseudo_caption(np.array([0.2, 0.5, 0.25, 0.05]), names, 3) == \
        "a video showing espresso, table and cup"


def test_yamnet_mel_front_end() -> None:
    fb = mel_matrix()
    assert fb.shape == (257, 64) and (fb.sum(axis=0) > 0).all() and fb[0].sum() == 0
    peaks = fb.argmax(axis=0) * 8000 / 256
    assert peaks[0] == pytest.approx(125, abs=32) and peaks[-1] == pytest.approx(7500, abs=300)
    spec = log_mel(np.zeros(16000, np.float32))
    assert spec.shape == (98, 64) and np.allclose(spec, np.log(0.001))


def _ticks(rate: int = 16000) -> np.ndarray:
    x = np.zeros(3 * rate, np.float32)
    n = int(0.02 * rate)
    burst = 0.8 * np.exp(-np.arange(n) / (n / 5)) * np.sin(2 * np.pi * 2000 * np.arange(n) / rate)
    for s in range(0, 3 * rate - n, rate // 2):
        x[s : s + n] += burst.astype(np.float32)
    return x


def test_yamnet_tags_synthetic_sounds(yamnet: Yamnet) -> None:
    t = np.arange(3 * 16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    emb, tags = yamnet.encode([tone, _ticks()], 16000, 18)
    names = [n for _, n in audioset_labels()]
    assert tags is not None and emb.shape == (2, 18, 1024)
    top_tone = {names[i] for i in np.argsort(-tags[0])[:3]}
    top_ticks = {names[i] for i in np.argsort(-tags[1])[:3]}
    assert top_tone & {"Sine wave", "Beep, bleep", "Whistling", "Whistle"}
    assert top_ticks & {"Tick", "Clicking", "Tick-tock", "Tap"}
    assert tags[:, 1].max() == 0  # "Male speech" is not a YAMNet class: stays 0


def test_yamnet_batched_equals_single(yamnet: Yamnet) -> None:
    rng = np.random.default_rng(1)
    waves = [rng.normal(0, 0.2, 48000).astype(np.float32), _ticks()]
    emb, tags = yamnet.encode(waves, 16000, 18)
    one, one_tags = yamnet.encode(waves[1:], 16000, 18)
    assert tags is not None and one_tags is not None
    assert np.array_equal(emb[1], one[0]) and np.array_equal(tags[1], one_tags[0])


def test_ast_head_maps_audioset_names(hf_dirs: dict[str, Path]) -> None:
    enc = HfAst(hf_dirs["ast_head"])
    emb, tags = enc.encode([np.zeros(48000, np.float32)], 16000, 18)
    assert enc.tags_audioset and tags is not None and emb.shape == (1, 18, 32)
    assert set(np.flatnonzero(tags[0])) <= {0, 137, 500} and tags[0, [0, 137, 500]].min() > 0


def test_blip_captions_are_deterministic(hf_dirs: dict[str, Path]) -> None:
    cap = BlipClipCaptioner(_cfg(hf_dirs, captioner="hf-blip"), "cpu")
    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    first = cap.caption([frames, frames[:1]], [None, None], [np.array([1.0, 3.0, 2.0]),
                                                             np.array([1.0])])
    assert first == cap.caption([frames, frames[:1]], [None, None],
                                [np.array([1.0, 3.0, 2.0]), np.array([1.0])])
    assert len(first) == 2 and all(isinstance(c, str) for c in first)


def test_hf_encoder_without_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hf_vit_path"):
        create_frame_encoder(ExtractConfig(frame_encoder="hf-vit"))
    with pytest.raises(ConfigError, match="holds no config.json"):
        create_audio_encoder(ExtractConfig(audio_encoder="hf-ast", hf_ast_path=tmp_path))
    with pytest.raises(ConfigError, match="unknown"):
        create_frame_encoder(ExtractConfig(frame_encoder="resnet-9000"))
