"""The action classifier: an LSTM over video features plus (possibly absent) audio features.

Input per step: RGB + flow features (2D = 2560 for EfficientNet-Lite0) projected by a linear
bottleneck to `visual_dim`, concatenated with the audio features (A = 128; zeros when absent) and
an audio-present flag. The last hidden state goes through a linear layer to the class logits.
The bottleneck keeps the LSTM small (the research fed 1536 + 128 straight into it).
"""

from __future__ import annotations

import torch
from torch import nn


class ActionClassifier(nn.Module):
    """(B, T, 2D) video + (B, T, A) audio + (B,) present flag -> (B, num_classes) logits."""

    def __init__(
        self,
        visual_in: int,
        visual_dim: int,
        audio_dim: int,
        hidden: int,
        num_classes: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.visual = nn.Sequential(
            nn.LayerNorm(visual_in),
            nn.Linear(visual_in, visual_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.lstm = nn.LSTM(visual_dim + audio_dim + 1, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_classes)

    def forward(
        self, visual: torch.Tensor, audio: torch.Tensor, present: torch.Tensor
    ) -> torch.Tensor:
        """Classify clips.

        Parameters
        ----------
        visual
            (B, T, 2D) RGB and flow features.
        audio
            (B, T, A) audio features; must be zeros where `present` is False.
        present
            (B,) bool or float, 1 where the audio slot holds real or generated audio.

        Returns
        -------
        torch.Tensor
            (B, num_classes) logits.
        """
        b, t, _ = visual.shape
        flag = present.to(visual.dtype)[:, None, None].expand(b, t, 1)  # (B, T, 1)
        x = torch.cat([self.visual(visual), audio, flag], dim=2)  # (B, T, V + A + 1)
        _, (h, _) = self.lstm(x)  # h: (1, B, H)
        return self.out(self.drop(h[-1]))  # (B, num_classes)
