"""Methods called in this process: the debugging mode (``--shrink-sandbox=in-process``) and the notebook API.

Both exist so that a researcher can step into their own method (breakpoints, ``--pdb``). Nothing
walls the method off here: the debugging mode's rows are marked ``in-process`` (unverified), never
stored as verified, and refused by the gates; the notebook API measures nothing.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from ..errors import CaseFailure
from ..prunable import parse_pattern
from ..run.masks import validate_masks, validate_pattern
from .calling import answer_call, case_context
from .child import model_for
from .context import PruneContext
from .discovery import load_method
from .methods import METHODS, Method, load_installed
from .protocol import Answer, Setup


class InProcessCalls:
    """A case's method called directly, on a model of its own (the harness still measures its own copy)."""

    def __init__(self, setup: Setup) -> None:
        self.method = load_method(setup.method)
        self.setup, self.model = setup, model_for(setup)
        torch.manual_seed(setup.seed)  # as in a child: the method's global RNG starts from the case's seed
        self.ctx: PruneContext | None = None

    def call(self, compression: float, step: int, state: dict[str, Tensor] | None) -> Answer:
        if self.ctx is None:
            self.ctx = case_context(self.setup, self.model, compression, self.method.steps)
        else:
            with torch.no_grad():
                self.model.load_state_dict(state)
            self.ctx.advance(compression)
        try:
            return answer_call(self.method, self.ctx, reraise=True)
        finally:
            torch.set_num_threads(self.setup.threads)  # the one process-wide setting that changes the harness's numbers

    def close(self) -> None:
        self.ctx = None


def prune(
    model: nn.Module,
    method: str | Callable[[PruneContext], object],
    compression: float,
    *,
    batch: tuple[Tensor, Tensor],
    seed: int = 0,
    calibration: Tensor | None = None,
    basis: str = "model",
) -> dict[str, Tensor]:
    """Masks of ``method`` for ``model`` at whole-model ``compression``, validated, keyed by parameter name.

    ``method`` is a registered name (installed methods, such as the baselines, are found; import
    your own module first) or a function of a :class:`PruneContext`. The model's weights are
    not modified unless the method itself does so. ``calibration`` (token windows) and ``basis`` (``model`` or
    ``prunable``: what ``compression`` divides) are what a language-model suite would give the method.
    """
    if isinstance(method, str):
        if method not in METHODS:
            load_installed()
        fn = METHODS.get(method)
    else:
        fn = Method(getattr(method, "__name__", "method"), method)
    pattern = parse_pattern(fn.pattern)
    ctx = PruneContext(model, compression, batch[0], batch[1], seed=seed, pattern=pattern,
                       calibration=calibration, basis=basis)
    answer = answer_call(fn, ctx)
    if answer.error is not None:
        raise CaseFailure(answer.error)
    masks = validate_masks(answer.masks, ctx.prunable)
    if pattern is not None:
        validate_pattern(masks, ctx.input_dims, pattern)
    return masks
