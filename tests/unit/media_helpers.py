"""Small real media files for the extraction tests, written with PyAV / soundfile."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import torch

from fedvida.resources import audioset_labels


def tone(freq: float, seconds: float, rate: int, amp: float = 0.3) -> np.ndarray:
    """A sine tone ``(S,)`` float32."""
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def index_frame(i: int, width: int, height: int) -> np.ndarray:
    """A frame whose top strip encodes its index in 8 black/white blocks, plus a moving bar."""
    img = np.full((height, width, 3), 90, dtype=np.uint8)
    block = width // 8
    for bit in range(8):
        img[: height // 4, bit * block : (bit + 1) * block] = 255 if (i >> bit) & 1 else 0
    x = (3 * i) % max(1, width - 16)
    img[height // 2 : 3 * height // 4, x : x + 16] = 230
    return img


def read_index(frame: np.ndarray) -> int:
    """Inverse of `index_frame` on a decoded (and possibly resized/cropped-in-x) frame."""
    h, w = frame.shape[:2]
    block = w / 8
    strip = frame[: h // 8, :, 0].astype(float)
    bits = [strip[:, int((b + 0.3) * block) : int((b + 0.7) * block)].mean() > 128
            for b in range(8)]
    return sum(1 << b for b, on in enumerate(bits) if on)


def write_clip(
    path: Path,
    *,
    fps: Fraction | int = 30,
    seconds: float = 3.0,
    size: tuple[int, int] = (96, 72),
    codec: str = "libx264",
    audio: np.ndarray | None = None,
    audio_rate: int = 48000,
    layout: str = "mono",
    audio_stream_without_data: bool = False,
) -> Path:
    """Write an mp4 with index-coded frames and an optional AAC track.

    ``audio`` is ``(S,)`` (copied to every channel of ``layout``) at ``audio_rate``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps)
    n = int(round(seconds * float(rate)))
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=rate)
        vs.width, vs.height = size
        vs.pix_fmt = "yuv420p"
        a_stream = None
        if audio is not None or audio_stream_without_data:
            a_stream = out.add_stream("aac", rate=audio_rate, layout=layout)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(index_frame(i, *size), format="rgb24")
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        if a_stream is not None and audio is not None:
            channels = a_stream.layout.nb_channels
            data = np.tile(audio.astype(np.float32), (channels, 1))  # (C, S)
            step = 1024
            for s in range(0, data.shape[1], step):
                chunk = np.ascontiguousarray(data[:, s : s + step])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                frame.sample_rate = audio_rate
                frame.pts = s
                for pkt in a_stream.encode(frame):
                    out.mux(pkt)
            for pkt in a_stream.encode():
                out.mux(pkt)
    return path


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """A 16-bit PCM wav (``samples`` ``(S,)`` or ``(S, C)``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, rate, subtype="PCM_16")
    return path


def dominant_freq(samples: np.ndarray, rate: int) -> float:
    """Frequency (Hz) of the strongest FFT bin."""
    spec = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spec) * rate / len(samples))


TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64}


def write_tiny_hf_models(root: Path) -> dict[str, Path]:
    """Tiny randomly initialised ViT, AST (bare and with an AudioSet head) and BLIP, saved."""
    from transformers import (
        ASTConfig,
        ASTFeatureExtractor,
        ASTForAudioClassification,
        ASTModel,
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
        ViTConfig,
        ViTImageProcessor,
        ViTModel,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    vit = root / "vit"
    ViTModel(ViTConfig(**TINY, image_size=32, patch_size=8)).save_pretrained(vit)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(vit)
    ast_cfg = {**TINY, "max_length": 100, "num_mel_bins": 64}
    ast = root / "ast"
    ASTModel(ASTConfig(**ast_cfg)).save_pretrained(ast)
    ASTFeatureExtractor(num_mel_bins=64, max_length=100).save_pretrained(ast)
    ast_head = root / "ast-head"
    names = [audioset_labels()[i][1] for i in (0, 137, 500)]
    head_cfg = ASTConfig(**ast_cfg, id2label=dict(enumerate(names)),
                         label2id={n: i for i, n in enumerate(names)})
    ASTForAudioClassification(head_cfg).save_pretrained(ast_head)
    ASTFeatureExtractor(num_mel_bins=64, max_length=100).save_pretrained(ast_head)
    # BLIP with a word-piece tokenizer built offline from a small vocabulary file
    blip = root / "blip"
    vocab = root / "vocab.txt"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "video", "of", "dog", "cup"]
    vocab.write_text("\n".join(words) + "\n")
    tok = BertTokenizer(str(vocab))
    text = {**TINY, "vocab_size": len(words), "max_position_embeddings": 32,
            "bos_token_id": 2, "sep_token_id": 3, "pad_token_id": 0}
    vision = {**TINY, "image_size": 32, "patch_size": 8}
    BlipForConditionalGeneration(
        BlipConfig(text_config=text, vision_config=vision, projection_dim=32)
    ).save_pretrained(blip)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                  tokenizer=tok).save_pretrained(blip)
    return {"vit": vit, "ast": ast, "ast_head": ast_head, "blip": blip}
