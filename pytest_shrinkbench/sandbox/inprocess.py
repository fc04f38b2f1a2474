"""The plain Python API for notebooks: masks for any model, without pytest."""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from ..run.masks import validate_masks
from . import methods
from .context import PruneContext


def prune(
    model: nn.Module,
    method: str | Callable[[PruneContext], object],
    compression: float,
    *,
    batch: tuple[Tensor, Tensor],
    seed: int = 0,
) -> dict[str, Tensor]:
    """Masks of ``method`` for ``model`` at whole-model ``compression``, validated, keyed by parameter name.

    ``method`` is a registered name (installed methods, such as the baselines, are found; import
    your own module first) or a function of a :class:`PruneContext`. The model's weights are
    not modified unless the method itself does so.
    """
    if isinstance(method, str):
        if method not in methods.METHODS:
            methods.discover([])
        fn = methods.METHODS.get(method)
    else:
        fn = methods.Method(getattr(method, "__name__", "method"), method)
    ctx = PruneContext(model, compression, batch[0], batch[1], seed=seed)
    masks, _weights = methods.call(fn, ctx)
    return validate_masks(masks, ctx.prunable)
