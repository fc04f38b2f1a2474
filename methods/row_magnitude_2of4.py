"""Row magnitude in the 2:4 pattern: of every 4 consecutive weights of a row, the 2 largest |w| stay."""

from pytest_shrinkbench import method
from pytest_shrinkbench.oneshot import keep_per_row


@method("row-magnitude-2of4", baseline=True)
def row_magnitude_2of4(ctx):
    return {name: keep_per_row(w.detach().abs().flatten(1), 0.5, (2, 4)).view_as(w) for name, w in ctx.prunable.items()}
