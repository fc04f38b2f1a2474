"""Wanda in the 2:4 pattern: of every 4 consecutive weights of a row, the 2 with the highest |W_ij| · ‖X_j‖₂ stay."""

from pytest_shrinkbench import method
from pytest_shrinkbench.oneshot import keep_fraction, keep_per_row, prune_in_order, wanda_scores


@method("wanda-2of4", baseline=True, pattern="2:4", calibrated=True)
def wanda_2of4(ctx):
    keep = keep_fraction(ctx)
    masks, _ = prune_in_order(ctx, lambda w, inputs: (keep_per_row(wanda_scores(w, inputs), keep, ctx.pattern), None))
    return masks
