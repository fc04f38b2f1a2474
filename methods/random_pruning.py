"""Random pruning: the straw man. Scores are uniform noise from the case's seeded generator."""

import torch

from pytest_shrinkbench import method


@method("random", baseline=True)
def random(ctx):
    return ctx.keep_top(
        {name: torch.rand(w.shape, generator=ctx.generator, device=w.device) for name, w in ctx.prunable.items()}
    )
