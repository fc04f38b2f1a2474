"""Layerwise magnitude pruning: every prunable layer drops the same fraction of its smallest |w|."""

from pytest_shrinkbench import method


@method("layer-magnitude", baseline=True)
def layer_magnitude(ctx):
    return ctx.keep_top({name: w.detach().abs() for name, w in ctx.prunable.items()}, layerwise=True)
