"""SparseGPT (Frantar & Alistarh 2023, "Massive Language Models Can Be Accurately Pruned in One-Shot").

Each layer is pruned so that its output on the calibration inputs changes least: weights go by w² / [H⁻¹]_jj²,
in blocks of 128 columns, and the kept weights are updated to absorb the error (returned as new weights).
Blocks of the model are pruned in order, each seeing the outputs of the blocks pruned before it.
"""

from pytest_shrinkbench import method
from pytest_shrinkbench.oneshot import keep_fraction, prune_in_order, sparsegpt


@method("sparsegpt", baseline=True, calibrated=True)
def sparsegpt_method(ctx):
    keep = keep_fraction(ctx)
    return prune_in_order(ctx, lambda w, inputs: sparsegpt(w, inputs.hessian(), keep, ctx.pattern), hessian=True)
