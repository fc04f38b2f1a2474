"""SparseGPT in the 2:4 pattern: each group of 4 consecutive weights of a row loses the 2 with the smallest
w² / [H⁻¹]_jj² when the group is reached, the kept weights updated as in unstructured SparseGPT."""

from pytest_shrinkbench import method
from pytest_shrinkbench.oneshot import keep_fraction, prune_in_order, sparsegpt


@method("sparsegpt-2of4", baseline=True, pattern="2:4", calibrated=True)
def sparsegpt_2of4(ctx):
    keep = keep_fraction(ctx)
    return prune_in_order(ctx, lambda w, inputs: sparsegpt(w, inputs.hessian(), keep, ctx.pattern), hessian=True)
