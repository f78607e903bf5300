"""Small heads: the audio projection and the AudioSet tagger.

`AudioProjection` maps the frozen audio encoder's per-step features to the compact audio space
that the generator imitates and the classifier consumes (the research projected AST 768 -> 128).
`AudioTagger` predicts AudioSet's 527 labels from that space; SVDMap uses it to "tag" generated
features and compare them with the semantic dictionary.
"""

from __future__ import annotations

import torch
from torch import nn


class AudioProjection(nn.Module):
    """Real audio features (B, T, Da) -> (B, T, A), layer-normalised per step.

    The LayerNorm has no affine parameters: every projected step has zero mean and unit variance,
    so predicting the all-zero vector costs an MSE of exactly 1.0 (a fixed reference for the
    generator) and the target cannot shrink towards zero.

    Parameters
    ----------
    in_dim
        Audio encoder width Da (1024 for YAMNet).
    out_dim
        Projected width A (128).
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim, elementwise_affine=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Project audio features.

        Parameters
        ----------
        audio
            (B, T, Da) real audio features.

        Returns
        -------
        torch.Tensor
            (B, T, A) projected features.
        """
        return self.norm(self.linear(audio))  # (B, T, A)


class AudioTagger(nn.Module):
    """Projected audio (B, T, A) -> AudioSet multi-label logits (B, num_tags).

    A per-step MLP, mean-pooled over time, then a linear layer to the tag logits.
    """

    def __init__(self, audio_dim: int, hidden: int, num_tags: int) -> None:
        super().__init__()
        self.step = nn.Sequential(nn.Linear(audio_dim, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, num_tags)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Tag logits for real or generated projected audio.

        Parameters
        ----------
        audio
            (B, T, A) projected (or generated) audio features.

        Returns
        -------
        torch.Tensor
            (B, num_tags) logits; apply a sigmoid for per-label scores.
        """
        pooled = self.step(audio).mean(dim=1)  # (B, H)
        return self.out(pooled)  # (B, num_tags)
