"""SparseGPT in the 2:4 pattern: each group of 4 consecutive weights of a row loses the 2 with the smallest
w² / [H⁻¹]_jj² when the group is reached, the kept weights updated as in unstructured SparseGPT."""

from pytest_shrinkbench import method
from pytest_shrinkbench.oneshot import prune_in_order, sparsegpt


@method("sparsegpt-2of4", baseline=True)
def sparsegpt_2of4(ctx):
    return prune_in_order(ctx, lambda weight, inputs: sparsegpt(weight, inputs.hessian(), 0.5, (2, 4)), hessian=True)
