"""Stops a phase whose loss becomes NaN or Inf, before anything is built on its weights."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from mmengine.hooks import Hook

from ...registry import HOOKS


class TrainingDiverged(RuntimeError):
    """A phase's loss became non-finite: nothing was exported; the message names where and what is left."""


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Raise :class:`TrainingDiverged` at the first iteration whose logged losses are not finite.

    The check reads the values ``train_step`` returns (MMEngine already turns them into Python numbers
    each iteration for logging, so it costs no extra device sync). The message names the phase, epoch
    and iteration and the last checkpoint written (all checkpoints are checked finite before they are
    written: :class:`~mmincubation.engine.hooks.ExportWeightsHook`).

    Args:
        phase: the phase's name as it is shown (``'incubate module 1'``).
    """

    priority = 'VERY_HIGH'

    def __init__(self, phase: str) -> None:
        self.phase = phase

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs: dict | None = None) -> None:
        losses = {key: float(value.detach() if isinstance(value, torch.Tensor) else value)  # no autograd warning
                  for key, value in (outputs or {}).items() if 'loss' in key}
        bad = {key: value for key, value in losses.items() if not math.isfinite(value)}
        if not bad:
            return
        last = Path(runner.work_dir, 'last_checkpoint')
        kept = last.read_text().strip() if last.is_file() else ''
        raise TrainingDiverged(
            f'the {self.phase} phase diverged: {", ".join(f"{k} {v}" for k, v in bad.items())} at epoch '
            f'{runner.epoch + 1}, iteration {runner.iter + 1}; no product written; last finite checkpoint: '
            f'{kept or "none"}. Lower the learning rate (or clip gradients) and retrain the phase')
