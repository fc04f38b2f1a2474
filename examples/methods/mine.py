"""My method: magnitude pruning under 2:4 sparsity — of every 4 consecutive weights along an output's inputs, at most 2 stay."""

import torch
import torch.nn.functional as F

from pytest_shrinkbench import method

N, M = 2, 4


def n_of_m(scores: torch.Tensor) -> torch.Tensor:
    """The scores, with all but the best N of every M consecutive inputs (of each output row) set to -1."""
    rows = scores.flatten(1)
    groups = F.pad(rows, (0, -rows.shape[1] % M), value=-1.0).view(rows.shape[0], -1, M)
    best = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, groups.topk(N, dim=2).indices, True)
    return groups.where(best, -1.0).flatten(1)[:, : rows.shape[1]].view_as(scores)


@method("mine")
def mine(ctx):
    # A weight scored -1 is below every |w|: keep_top never keeps one while the ratio needs fewer than N of M.
    return ctx.keep_top({name: n_of_m(w.detach().abs()) for name, w in ctx.prunable.items()})
