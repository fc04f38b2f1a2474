"""One layer's mathematics for calibration-based one-shot pruning, with no knowledge of any model.

A layer here is a weight matrix ``W`` of shape ``(outputs, inputs)`` computing ``W @ x``, and what was seen of
its inputs over the calibration tokens (:class:`Inputs`). Masks are boolean, ``True`` = keep.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..prunable import keep_n_of_m

Pattern = tuple[int, int]  # N:M: keep N of every M consecutive weights along the input dimension


class Inputs:
    """What a layer's inputs looked like over the calibration tokens: per-feature sums of squares (Wanda's
    ‖X_j‖₂²) and, when ``hessian``, ``XᵀX`` (SparseGPT's Hessian of the layer's reconstruction error)."""

    def __init__(self, features: int, hessian: bool = False, device: torch.device | str = "cpu") -> None:
        self.features, self.tokens = features, 0
        self.squares = torch.zeros(features, device=device)
        self.xtx = torch.zeros(features, features, device=device) if hessian else None

    def add(self, x: Tensor) -> None:
        """Take in a batch of inputs whose last dimension is the layer's input features."""
        x = x.detach().reshape(-1, self.features).float()
        self.tokens += x.shape[0]
        self.squares += x.square().sum(dim=0)
        if self.xtx is not None:
            self.xtx.addmm_(x.T, x)

    def norms(self) -> Tensor:
        """‖X_j‖₂ of every input feature j over all calibration tokens."""
        return self.squares.sqrt()

    def hessian(self) -> Tensor:
        """``XᵀX`` averaged over the tokens (the scale cancels: dampening is relative to its diagonal)."""
        if self.xtx is None:
            raise ValueError("these inputs were gathered without their Hessian (hessian=True)")
        return self.xtx / max(self.tokens, 1)


def keep_per_row(scores: Tensor, keep: float, pattern: Pattern | None = None) -> Tensor:
    """Masks keeping the highest scores of every output row: ``round(weights × keep)`` in the layer, shared out as
    evenly as rows allow (the first rows keep one more when it does not divide), so small layers hit the budget
    too. With an N:M ``pattern``, the N highest of every M consecutive inputs instead (a layer whose input size
    is not a multiple of M is left dense: the harness's own rule, :func:`pytest_shrinkbench.prunable.keep_n_of_m`)."""
    if pattern is not None:
        return keep_n_of_m(scores, pattern)
    rows, cols = scores.shape
    mask = torch.zeros_like(scores, dtype=torch.bool)
    kept = round(rows * cols * keep)
    per_row = torch.full((rows, 1), kept // rows, device=scores.device)
    per_row[:kept % rows] += 1
    ranks = torch.arange(cols, device=scores.device).expand(rows, cols)
    return mask.scatter_(1, scores.argsort(dim=1, descending=True, stable=True), ranks < per_row)


def wanda_scores(weight: Tensor, inputs: Inputs) -> Tensor:
    """Wanda's importance |W_ij| · ‖X_j‖₂: a weight matters as much as the inputs it multiplies are large."""
    return weight.abs() * inputs.norms()[None, :]


def sparsegpt(weight: Tensor, hessian: Tensor, keep: float, pattern: Pattern | None = None,
              block: int = 128, damp: float = 0.01) -> tuple[Tensor, Tensor]:
    """SparseGPT (Frantar & Alistarh 2023): prune ``weight`` to ``keep`` of its entries (or to an N:M ``pattern``)
    and update the kept ones so that ``W X`` changes least, given the inputs' ``hessian`` (``XᵀX``).

    Columns are taken in blocks of ``block``. Within a block, the weights to prune are those with the smallest
    ``w² / [H⁻¹]_jj²`` (unstructured: chosen for the whole block when it starts; N:M: for each group of M
    columns when it is reached); each column in turn is then fixed and its error spread over the columns not
    yet fixed, through the upper Cholesky factor of ``H⁻¹`` (the optimal brain surgeon update, done lazily
    for the columns after the block). ``H`` is dampened by ``damp`` × its mean diagonal; an input never seen
    (``H_jj = 0``) cannot affect the output, so its weights are zeroed and pruned first.
    Returns the masks (``True`` = keep) and the new weights (pruned entries exactly zero).
    """
    w = weight.detach().float().contiguous().clone()
    h = hessian.detach().clone().float()
    rows, cols = w.shape
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += torch.eye(cols, device=h.device) * (damp * torch.diagonal(h).mean())
    inverse = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    pruned = torch.zeros_like(w, dtype=torch.bool)
    for start in range(0, cols, block):
        end = min(start + block, cols)
        w1, hinv = w[:, start:end].clone(), inverse[start:end, start:end]
        errors = torch.zeros_like(w1)
        p1 = torch.zeros_like(w1, dtype=torch.bool)
        diag = torch.diagonal(hinv)
        if pattern is None:
            drop = round(w1.numel() * (1 - keep))
            if drop:
                p1.view(-1)[(w1.square() / diag.square()).reshape(-1).topk(drop, largest=False).indices] = True
        for i in range(end - start):
            if pattern is not None and i % pattern[1] == 0 and cols % pattern[1] == 0:
                n, m = pattern
                group = w1[:, i:i + m].square() / diag[i:i + m].square()
                p1.scatter_(1, i + group.topk(m - n, dim=1, largest=False).indices, True)
            column = w1[:, i]
            fixed = torch.where(p1[:, i], 0.0, column)
            error = (column - fixed) / hinv[i, i]
            w1[:, i:] -= error[:, None] * hinv[i, i:][None, :]
            w1[:, i] = fixed
            errors[:, i] = error
        w[:, start:end] = w1
        pruned[:, start:end] = p1
        w[:, end:] -= errors @ inverse[start:end, end:]
    return ~pruned, w.to(weight.dtype)
