"""Losses: generator reconstruction, tagger BCE, classification and the FedProx term."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def generator_loss(
    generated: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, cos_weight: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MSE + ``cos_weight`` * (1 - cosine) between generated and real projected audio.

    The target should be detached by the caller (stop-gradient; see docs/methods.md).

    Parameters
    ----------
    generated
        (B, T, A) generated features.
    target
        (B, T, A) projected real audio features.
    mask
        (B,) bool, clips that count (real audio present).

    Returns
    -------
    tuple
        (loss, mse, cos): scalars averaged over masked clips and steps; zeros when the mask is
        empty (the loss still has a graph, so backward works).
    """
    if not bool(mask.any()):
        zero = generated.sum() * 0.0
        return zero, zero.detach(), zero.detach()
    g, t = generated[mask], target[mask]  # (M, T, A)
    mse = F.mse_loss(g, t)
    cos = F.cosine_similarity(g, t, dim=2, eps=1e-6).mean()
    return mse + cos_weight * (1.0 - cos), mse.detach(), cos.detach()


def tagger_loss(logits: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy against the audio encoder's clip tags (soft targets in [0, 1]).

    Parameters
    ----------
    logits
        (B, K) tagger logits on real projected audio.
    tags
        (B, K) AudioSet scores of the real audio.
    mask
        (B,) bool, clips with real audio.
    """
    if not bool(mask.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[mask], tags[mask].clamp(0.0, 1.0))


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (B, C) logits against (B,) labels."""
    return F.cross_entropy(logits, labels)


def proximal_term(model: nn.Module, reference: dict[str, torch.Tensor], mu: float) -> torch.Tensor:
    """FedProx: ``mu / 2 * sum ||w - w_global||^2`` over the parameters named in `reference`."""
    total = torch.zeros(())
    for name, param in model.named_parameters():
        ref = reference.get(name)
        if ref is not None:
            total = total + (param - ref.to(param.device, param.dtype)).pow(2).sum()
    return 0.5 * mu * total
