"""The action classifier: an LSTM over video features plus (possibly absent) audio features.

Input per step: RGB + flow features (2D = 2560 for EfficientNet-Lite0) projected by a linear
bottleneck to `visual_dim`, concatenated with the audio features (A = 128; zeros when absent) and
the *source* of the audio slot. The last hidden state goes through a linear layer to the class
logits. The bottleneck keeps the LSTM small (the research fed 1536 + 128 straight into it).

The source tells the classifier where its audio comes from: real, generated (any fill-in:
generator, prototype) or absent. With ``source_indicator`` (the default) it is a one-hot of these
three, so the classifier can learn how far to trust generated audio (cf. the modality-aware
fusion of the missing-modality literature, e.g. Ma et al., "SMIL", AAAI 2021); without it, one
present flag (real or generated alike), as in the first version.

Two fusions (``model.fusion``):

* ``early`` (the first version): one LSTM over [video, audio, source] per step;
* ``late``: a video LSTM and an audio LSTM, each with its own linear head; the logits are the
  sum, the audio head's only where the slot is not absent. With the slot absent the classifier
  *is* its video head, which `video_logits` exposes for a unimodal auxiliary loss
  (``train.video_head_weight``): the remedy for modality imbalance of Wang et al., "What makes
  training multi-modal classification networks hard?", CVPR 2020 (a classifier that leans on
  the easy modality under-trains its video pathway).
"""

from __future__ import annotations

import torch
from torch import nn

ABSENT, REAL, GENERATED = 0, 1, 2
SOURCES = ("absent", "real", "generated")


def source_codes(source: torch.Tensor) -> torch.Tensor:
    """(B,) int64 source codes; a bool tensor means real (True) or absent (False)."""
    if source.dtype == torch.bool:
        return torch.where(source, REAL, ABSENT)
    return source.to(torch.int64)


class ActionClassifier(nn.Module):
    """(B, T, 2D) video + (B, T, A) audio + (B,) audio source -> (B, num_classes) logits."""

    fill_weight: torch.Tensor

    def __init__(
        self,
        visual_in: int,
        visual_dim: int,
        audio_dim: int,
        hidden: int,
        num_classes: int,
        dropout: float,
        source_indicator: bool = True,
        fusion: str = "early",
    ) -> None:
        super().__init__()
        if fusion not in ("early", "late"):
            raise ValueError(f"fusion must be 'early' or 'late', got {fusion!r}")
        self.source_indicator = source_indicator
        self.fusion = fusion
        self.visual = nn.Sequential(
            nn.LayerNorm(visual_in),
            nn.Linear(visual_in, visual_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        flag = len(SOURCES) if source_indicator else 1
        self.drop = nn.Dropout(dropout)
        if fusion == "early":
            self.lstm = nn.LSTM(visual_dim + audio_dim + flag, hidden, batch_first=True)
        else:
            self.lstm = nn.LSTM(visual_dim, hidden, batch_first=True)
            self.audio_lstm = nn.LSTM(audio_dim + flag, hidden, batch_first=True)
            self.audio_out = nn.Linear(hidden, num_classes)
        # late fusion: weight of the audio head's logits when its input is a fill-in (chosen
        # on the validation split, `fedvida.training.central.choose_fill_weight`; 1 = as real)
        self.register_buffer("fill_weight", torch.ones(1))  # (1,): 0-d arrays do not travel
        self.out = nn.Linear(hidden, num_classes)

    def source_features(self, source: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(B,) source codes (or bool present flags) -> (B, F) indicator features."""
        source = source_codes(source)
        if self.source_indicator:
            return nn.functional.one_hot(source, len(SOURCES)).to(dtype)  # (B, 3)
        return (source != ABSENT).to(dtype)[:, None]  # (B, 1)

    def forward(
        self, visual: torch.Tensor, audio: torch.Tensor, source: torch.Tensor
    ) -> torch.Tensor:
        """Classify clips.

        Parameters
        ----------
        visual
            (B, T, 2D) RGB and flow features.
        audio
            (B, T, A) audio features; must be zeros where the source is absent.
        source
            (B,) int64 source codes (`ABSENT`, `REAL`, `GENERATED`); a bool tensor means
            real (True) or absent (False).

        Returns
        -------
        torch.Tensor
            (B, num_classes) logits.
        """
        b, t, _ = visual.shape
        feats = self.source_features(source, visual.dtype)  # (B, F)
        flag = feats[:, None, :].expand(b, t, -1)
        if self.fusion == "late":
            _, (ha, _) = self.audio_lstm(torch.cat([audio, flag], dim=2))  # (1, B, H)
            code = source_codes(source)
            on = (code != ABSENT).to(visual.dtype)  # (B,)
            gate = torch.where(code == GENERATED, self.fill_weight.to(visual.dtype), on)
            return self.video_logits(visual) + gate[:, None] * self.audio_out(self.drop(ha[-1]))
        x = torch.cat([self.visual(visual), audio, flag], dim=2)  # (B, T, V + A + F)
        _, (h, _) = self.lstm(x)  # h: (1, B, H)
        return self.out(self.drop(h[-1]))  # (B, num_classes)

    def video_logits(self, visual: torch.Tensor) -> torch.Tensor:
        """(B, num_classes) logits of the video head alone (late fusion only).

        Raises
        ------
        ValueError
            For early fusion, which has no separate video head.
        """
        if self.fusion != "late":
            raise ValueError("video_logits needs model.fusion 'late'")
        _, (h, _) = self.lstm(self.visual(visual))  # (1, B, H)
        return self.out(self.drop(h[-1]))
