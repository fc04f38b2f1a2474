"""Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models"): one-shot, no update.

A weight's score is |W_ij| · ‖X_j‖₂, its magnitude times the norm of the input feature it multiplies over the
calibration tokens; every output row keeps its highest scores. Blocks are pruned in order, each seeing the
outputs of the blocks pruned before it.
"""

from pytest_shrinkbench import method
from pytest_shrinkbench.oneshot import keep_fraction, keep_per_row, prune_in_order, wanda_scores


@method("wanda", baseline=True, calibrated=True)
def wanda(ctx):
    keep = keep_fraction(ctx)
    masks, _ = prune_in_order(ctx, lambda w, inputs: (keep_per_row(wanda_scores(w, inputs), keep, ctx.pattern), None))
    return masks
