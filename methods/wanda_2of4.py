"""Wanda in the 2:4 pattern: of every 4 consecutive weights of a row, the 2 with the highest |W_ij| · ‖X_j‖₂ stay."""

from pytest_shrinkbench import method
from pytest_shrinkbench.oneshot import keep_per_row, prune_in_order, wanda_scores


@method("wanda-2of4", baseline=True)
def wanda_2of4(ctx):
    masks, _ = prune_in_order(ctx, lambda weight, inputs: (keep_per_row(wanda_scores(weight, inputs), 0.5, (2, 4)), None))
    return masks
