"""timm's cosine learning-rate schedule (warm-up inside the cosine) as an MMEngine parameter scheduler."""
from __future__ import annotations

import math

from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler

from ..registry import PARAM_SCHEDULERS


@PARAM_SCHEDULERS.register_module()
class TimmCosineLR(_ParamScheduler):
    r"""The learning rate of timm's ``CosineLRScheduler`` as DeiT and the official Deep Incubation runs
    use it (one cycle, ``warmup_prefix=False``, no noise), in closed form.

    At step :math:`t` (counted from ``begin``), with :math:`T` = ``T_max`` and :math:`w` = ``warmup``:

    .. math::
        lr(t) = \begin{cases}
            \text{warmup\_lr} + t\,(base - \text{warmup\_lr}) / w & t < w \\
            \eta_{min} + (base - \eta_{min})\,(1 + \cos(\pi t / T)) / 2 & w \le t < T \\
            \eta_{min} & t \ge T
        \end{cases}

    The cosine spans the whole phase, warm-up included: it is *not* restarted after the warm-up (as
    MMEngine's ``LinearLR`` + ``CosineAnnealingLR(begin=warmup)`` would), so the rate drops a little
    where the warm-up ends (to 98.9 % of ``base`` at 20 of 300 epochs).

    Args:
        optimizer: the (wrapped) optimizer; ``base`` is each parameter group's initial lr, after
            ``auto_scale_lr``.
        warmup: warm-up length in this scheduler's steps (epochs when ``by_epoch``); 0 for none.
        warmup_lr: lr at step 0 of the warm-up, absolute (timm's ``warmup_lr_init``, DeiT's
            ``--warmup-lr``).
        eta_min: final lr, absolute (timm's ``lr_min``, DeiT's ``--min-lr``).
        T_max: cosine length in steps; default ``end - begin`` (the runner sets ``end`` to the phase's
            ``max_epochs`` / ``max_iters``), so the cosine spans the phase.
        lag: steps by which the schedule runs late. DeiT's training loop (and the official code's)
            calls timm's ``scheduler.step(epoch)`` at the end of epoch ``epoch``, so epoch ``e`` trains
            at :math:`lr(e - 1)` and epoch 0 at :math:`lr(0)`: ``lag=1`` reproduces that, ``lag=0``
            gives :math:`lr(e)` (timm's own ``train.py``).
        begin, end, last_step, by_epoch, verbose: as every MMEngine parameter scheduler.
            ``convert_to_iter_based=True`` multiplies ``warmup``, ``T_max``, ``lag``, ``begin`` and
            ``end`` by the epoch length: the same curve, updated every iteration.
    """

    def __init__(self, optimizer, warmup: int = 0, warmup_lr: float = 1e-6, eta_min: float = 1e-5,
                 T_max: int | None = None, lag: int = 0, begin: int = 0, end: int = INF, last_step: int = -1,
                 by_epoch: bool = True, verbose: bool = False) -> None:
        if T_max is None:
            if end == INF:
                raise ValueError('TimmCosineLR needs the length of its cosine: give T_max or end (the runner sets '
                                 'end to the phase\'s max_epochs / max_iters)')
            T_max = end - begin
        if warmup < 0 or lag < 0 or T_max <= 0:
            raise ValueError(f'TimmCosineLR needs warmup >= 0, lag >= 0 and T_max > 0, got warmup={warmup}, '
                             f'lag={lag}, T_max={T_max}')
        self.warmup, self.warmup_lr, self.eta_min, self.T_max, self.lag = warmup, warmup_lr, eta_min, T_max, lag
        super().__init__(optimizer, 'lr', begin=begin, end=end, last_step=last_step, by_epoch=by_epoch,
                         verbose=verbose)

    @classmethod
    def build_iter_from_epoch(cls, *args, warmup: int = 0, T_max: int | None = None, lag: int = 0, begin: int = 0,
                              end: int = INF, by_epoch: bool = True, epoch_length: int | None = None, **kwargs):
        """The same schedule from an epoch-based config, stepped every iteration."""
        if not by_epoch or not epoch_length:
            raise ValueError('convert_to_iter_based needs by_epoch=True and the epoch length')
        return cls(*args, warmup=warmup * epoch_length, T_max=None if T_max is None else T_max * epoch_length,
                   lag=lag * epoch_length, begin=begin * epoch_length,
                   end=end if end == INF else end * epoch_length, by_epoch=False, **kwargs)

    def lr_at(self, t: int, base: float) -> float:
        """timm's ``CosineLRScheduler._get_lr(t)`` for one parameter group of initial lr ``base``."""
        if t < self.warmup:
            return self.warmup_lr + t * (base - self.warmup_lr) / self.warmup
        if t >= self.T_max:
            return self.eta_min
        return self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2

    def _get_value(self) -> list[float]:
        t = max(self.last_step - self.lag, 0)
        return [self.lr_at(t, base) for base in self.base_values]
