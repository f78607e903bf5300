"""The audio feature generator: an LSTM from video features (+ condition + noise) to audio.

Lee et al. (ICASSP 2019) generate audio features from RGB + optical-flow features with an LSTM;
CAFMap adds a condition built from the clip's caption (top-3 AudioSet labels), injected strongly at
the representative steps and decaying to their neighbours (see `condition_weights`).
"""

from __future__ import annotations

import torch
from torch import nn


def condition_weights(rep_steps: torch.Tensor, decay: float) -> torch.Tensor:
    """Per-step injection weights of the CAFMap condition.

    A representative (anchor) step gets weight 1, a step at distance d from the nearest anchor
    gets ``decay ** d``. A clip without any anchor treats every step as an anchor (weight 1).

    Parameters
    ----------
    rep_steps
        (N, T) bool, the representative steps.
    decay
        Weight factor per step of distance, in [0, 1].

    Returns
    -------
    torch.Tensor
        (N, T) float32 weights in [0, 1].
    """
    n, t = rep_steps.shape
    pos = torch.arange(t, dtype=torch.float32)  # (T,)
    dist = (pos[None, :, None] - pos[None, None, :]).abs()  # (1, T, T): |step - anchor|
    big = torch.full((n, t, t), float(t), dtype=torch.float32)
    anchor = rep_steps[:, None, :].expand(n, t, t)  # (N, T, T)
    nearest = torch.where(anchor, dist.expand(n, t, t), big).min(dim=2).values  # (N, T)
    weights = torch.pow(torch.tensor(decay, dtype=torch.float32), nearest)  # (N, T)
    none = ~rep_steps.any(dim=1)  # (N,)
    weights[none] = 1.0
    return weights


class AudioGenerator(nn.Module):
    """Video features (+ condition, + noise) (B, T, 2D) -> generated audio features (B, T, A).

    Parameters
    ----------
    visual_in
        Width of the concatenated RGB + flow features (2D).
    hidden
        LSTM width; the visual input is first projected to this width.
    audio_dim
        Output width A (the projected audio space).
    num_tags
        Width of the condition input: a (B, num_tags) AudioSet label-score vector.
    cond_dim
        Width of the learned label embedding (0: no condition).
    noise_dim
        Gaussian noise per step (0: none).
    dropout
        Dropout on the projected visual input.
    """

    def __init__(
        self,
        visual_in: int,
        hidden: int,
        audio_dim: int,
        num_tags: int,
        cond_dim: int,
        noise_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.noise_dim = noise_dim
        self.cond_dim = cond_dim
        self.visual = nn.Sequential(
            nn.LayerNorm(visual_in), nn.Linear(visual_in, hidden), nn.ReLU(), nn.Dropout(dropout)
        )
        # Label-score vector -> condition: a learned embedding per AudioSet label, mixed by score.
        self.cond = nn.Linear(num_tags, cond_dim, bias=False) if cond_dim > 0 else None
        self.lstm = nn.LSTM(hidden + cond_dim + noise_dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, audio_dim)

    def forward(
        self,
        visual: torch.Tensor,
        cond: torch.Tensor | None = None,
        cond_weights: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Generate audio features.

        Parameters
        ----------
        visual
            (B, T, 2D) RGB and flow features, concatenated per step.
        cond
            (B, num_tags) label scores (CAFMap), or None for no condition (zeros).
        cond_weights
            (B, T) injection weight per step; None means 1 everywhere.
        noise
            (B, T, noise_dim) noise; None means zeros (the mean prediction, used at evaluation).

        Returns
        -------
        torch.Tensor
            (B, T, A) generated audio features.
        """
        b, t, _ = visual.shape
        parts = [self.visual(visual)]  # (B, T, H)
        if self.cond is not None:
            if cond is None:
                parts.append(visual.new_zeros(b, t, self.cond_dim))
            else:
                emb = self.cond(cond)[:, None, :].expand(b, t, self.cond_dim)  # (B, T, C)
                if cond_weights is not None:
                    emb = emb * cond_weights[:, :, None]
                parts.append(emb)
        if self.noise_dim > 0:
            parts.append(noise if noise is not None else visual.new_zeros(b, t, self.noise_dim))
        seq, _ = self.lstm(torch.cat(parts, dim=2))  # (B, T, H)
        return self.out(seq)  # (B, T, A)
