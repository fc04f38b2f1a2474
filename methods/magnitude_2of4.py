"""2:4 magnitude pruning: in every group of 4 consecutive inputs of each weight, keep the 2 largest |w|.

The semi-structured pattern of NVIDIA's sparse tensor cores, reported beside unstructured sparsity by
SparseGPT and Wanda. The pattern fixes the density (half of every covered weight), so the harness runs
this method only at ratio 2; a weight whose input size is not a multiple of 4 stays dense.
"""

from pytest_shrinkbench import method


@method("magnitude-2of4", baseline=True, pattern="2:4")
def magnitude_2of4(ctx):
    return ctx.keep_top({name: w.detach().abs() for name, w in ctx.prunable.items()})
