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


class ClassPrototypes(nn.Module):
    """Per-class mean of the projected real audio: a small, count-weighted shared artifact.

    Buffers ``sums`` (C, A) and ``counts`` (C,) hold a client's per-class sums of time-pooled
    projected real audio and its clip counts, both divided by the client's number of training
    examples n_k. FedAvg weights each client by n_k, so the averaged buffers are
    ``sum_k S_k / N`` and ``sum_k C_k / N`` and their ratio is the exact count-weighted global
    class mean ``sum_k S_k / sum_k C_k`` (no server code of its own). Used by the `prototype`
    fill-in (a cross-modal prototype baseline in the spirit of prototype-based missing-modality
    methods, e.g. "ProtoMM"-style class audio prototypes mixed by the video prediction).

    Parameters
    ----------
    num_classes
        C.
    audio_dim
        A, the projected audio width.
    """

    sums: torch.Tensor
    counts: torch.Tensor

    def __init__(self, num_classes: int, audio_dim: int) -> None:
        super().__init__()
        self.register_buffer("sums", torch.zeros(num_classes, audio_dim))
        self.register_buffer("counts", torch.zeros(num_classes))
        self.prior: torch.Tensor | None = None

    @torch.no_grad()
    def update(self, pooled: torch.Tensor, labels: torch.Tensor, num_examples: int) -> None:
        """Set the buffers from this client's clips with real audio.

        Parameters
        ----------
        pooled
            (M, A) time-pooled projected real audio of the clips that have it.
        labels
            (M,) their class labels.
        num_examples
            n_k, every training clip of the client (with or without audio).
        """
        c, a = self.sums.shape
        sums = torch.zeros(c, a, device=self.sums.device)
        counts = torch.zeros(c, device=self.counts.device)
        if pooled.shape[0]:
            sums.index_add_(0, labels, pooled.to(sums.dtype))
            counts.index_add_(0, labels, torch.ones_like(labels, dtype=counts.dtype))
        n = float(max(num_examples, 1))
        self.sums.copy_(sums / n)
        self.counts.copy_(counts / n)

    def means(self) -> torch.Tensor:
        """(C, A) per-class means; a class without clips takes `prior`'s row (or zeros).

        `prior` (not part of the state dict) is set during local training to the means the
        client received (the global prototypes), so that a client which has no audio of some
        class still fills it in with the federation's prototype.
        """
        seen = (self.counts > 0)[:, None]
        own = self.sums / self.counts.clamp_min(1e-12)[:, None] * seen
        if self.prior is None:
            return own
        return torch.where(seen, own, self.prior.to(own.device, own.dtype))

    def fill(self, probs: torch.Tensor, steps: int) -> torch.Tensor:
        """Prototype audio for a class distribution.

        Parameters
        ----------
        probs
            (B, C) class probabilities (e.g. the video-only prediction).
        steps
            T.

        Returns
        -------
        torch.Tensor
            (B, T, A) ``probs @ means``, the same vector at every step.
        """
        return (probs @ self.means())[:, None, :].expand(-1, steps, -1)
