"""Writers of hostile media files for the torture tests (PyAV only; no ffmpeg binary needed)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import av
import numpy as np
from media_helpers import index_frame, tone


def write_audio_only(path: Path, *, layout: str, codec: str, rate: int = 48000,
                     seconds: float = 1.0, signal: np.ndarray | None = None) -> Path:
    """A file with one audio stream: ``signal`` (default a 0.3 440 Hz tone) on every channel.

    Frames are handed to the encoder interleaved (``flt``); PyAV converts to the codec's format.
    """
    x = tone(440, seconds, rate) if signal is None else signal.astype(np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        channels = stream.layout.nb_channels
        for s in range(0, len(x), 1024):
            chunk = np.tile(x[s : s + 1024], (channels, 1))  # (C, n)
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(chunk.T.reshape(1, -1)), format="flt", layout=layout)
            frame.sample_rate, frame.pts = rate, s
            for pkt in stream.encode(frame):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return path


def write_av(target: Path | io.BytesIO, *, fmt: str | None = None, vcodec: str = "libx264",
             size: tuple[int, int] = (64, 48), fps: int = 25, seconds: float = 3.0,
             frames: list[np.ndarray] | None = None, audio: np.ndarray | None = None,
             audio_rate: int = 48000, layout: str = "mono", acodec: str = "aac",
             audio_offset: float = 0.0, cover: bool = False, pts_offset: float = 0.0) -> None:
    """A video (index-coded frames unless ``frames`` given) plus an optional audio track.

    ``audio_offset`` delays the audio's first sample (s) relative to the video; ``cover`` adds an
    attached JPEG cover picture as the *first* video stream; ``pts_offset`` shifts every stream's
    timestamps (to concatenate MPEG-TS segments).
    """
    n = len(frames) if frames is not None else int(round(seconds * fps))
    options = {"live": "1"} if fmt == "webm" else {}
    if isinstance(target, Path):
        target.parent.mkdir(parents=True, exist_ok=True)
    with av.open(target, "w", format=fmt, options=options) as out:
        if cover:
            pic = out.add_stream("mjpeg", rate=1)
            pic.width, pic.height, pic.pix_fmt = size[0], size[1], "yuvj420p"
            pic.disposition = av.stream.Disposition.attached_pic
        vs = out.add_stream(vcodec, rate=fps)
        vs.width, vs.height = size
        vs.pix_fmt = "yuv420p"
        a_stream = None
        if audio is not None:
            a_stream = out.add_stream(acodec, rate=audio_rate, layout=layout)
        if cover:
            img = np.zeros((size[1], size[0], 3), np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = 0
            for pkt in pic.encode(frame):
                out.mux(pkt)
            for pkt in pic.encode():
                out.mux(pkt)
        v0 = int(round(pts_offset * fps))
        for i in range(n):
            img = frames[i] if frames is not None else index_frame(i, *size)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = v0 + i
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        if a_stream is not None and audio is not None:
            channels = a_stream.layout.nb_channels
            a0 = int(round((pts_offset + audio_offset) * audio_rate))
            for s in range(0, len(audio), 1024):
                chunk = np.tile(audio[s : s + 1024].astype(np.float32), (channels, 1))
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(chunk.T.reshape(1, -1)), format="flt", layout=layout)
                frame.sample_rate, frame.pts = audio_rate, a0 + s
                for pkt in a_stream.encode(frame):
                    out.mux(pkt)
            for pkt in a_stream.encode():
                out.mux(pkt)


class Unseekable(io.RawIOBase):
    """A write-only, non-seekable file object (what a pipe looks like to a muxer)."""

    def __init__(self, path: Path) -> None:
        self._fh = path.open("wb")

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return self._fh.write(data)

    def close(self) -> None:
        self._fh.close()
        super().close()


def set_mp4_rotation(path: Path, degrees_clockwise: int) -> None:
    """Patch the video track's ``tkhd`` display matrix of an mp4 to rotate by 90/180/270."""
    data = bytearray(path.read_bytes())
    one, zero, neg = 0x10000, 0, (-0x10000) & 0xFFFFFFFF
    mats = {90: (zero, one, zero, neg, zero, zero), 180: (neg, zero, zero, zero, neg, zero),
            270: (zero, neg, zero, one, zero, zero), 0: (one, zero, zero, zero, one, zero)}
    a, b, u, c, d, v = mats[degrees_clockwise]
    pos = data.find(b"tkhd")
    assert pos > 0
    version = data[pos + 4]
    matrix = pos + 4 + 4 + (32 if version == 1 else 20) + 16
    struct.pack_into(">9I", data, matrix, a, b, u, c, d, v, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))

