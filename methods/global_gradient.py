"""Global gradient-magnitude pruning: drop the smallest |w · ∂L/∂w| on a batch, across all layers.

A first-order estimate of how much the loss changes when a weight is removed (as in SNIP-like
methods), evaluated on the context's batch of training data.
"""

from pytest_shrinkbench import method


@method("global-gradient", baseline=True)
def global_gradient(ctx):
    grads = ctx.gradients()
    return ctx.keep_top({name: (w.detach() * grads[name]).abs() for name, w in ctx.prunable.items()})
