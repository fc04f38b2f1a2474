"""Layerwise gradient-magnitude pruning: each layer drops the same fraction of its smallest |w · ∂L/∂w|."""

from pytest_shrinkbench import method


@method("layer-gradient", baseline=True)
def layer_gradient(ctx):
    grads = ctx.gradients()
    return ctx.keep_top({name: (w.detach() * grads[name]).abs() for name, w in ctx.prunable.items()}, layerwise=True)
