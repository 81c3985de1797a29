"""Carries the random number generators' states through a checkpoint, so a resumed run continues exactly."""
from __future__ import annotations

import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.runner import IterBasedTrainLoop

from ...registry import HOOKS


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save the RNG states (torch, CUDA, numpy, Python) in every checkpoint; restore them on resume.

    MMEngine 0.10.7 resumes model, optimizer, schedulers and the epoch, but reseeds the generators
    from the config's seed: after resuming, drop path, dropout, batch augments (Mixup/CutMix) and the
    DataLoader's base seed draw other numbers than an uninterrupted run would. With this hook a run
    resumed from ``epoch_N.pth`` draws exactly the same ones, so on CPU it ends with bit-identical
    weights. Under DDP rank 0 writes the checkpoint, so every rank gets rank 0's states: exact with
    MMEngine's default ``randomness.diff_rank_seed=False`` (all ranks draw alike).

    States are restored only when the run continues from the checkpoint's iteration (a resume), not
    when a checkpoint merely initialises the weights (``load_from``). They are plain tensors, numpy
    arrays and ints, so the file still loads with ``weights_only=True``.

    An epoch-based run is restored when training starts, before the epoch's data loader draws its seed.
    An iteration-based run (``IterBasedTrainLoop``) resumes mid-stream: the loop first fetches the batches
    trained before (the same data, augmentation draws and worker streams as the first time), and only then,
    at the first new iteration, the states are restored, so the skip's draws do not shift them.

    MMEngine writes an epoch's checkpoint *before* that epoch's validation, which a resumed run does
    not repeat; validation draws random numbers too (its DataLoader's base seed), so the hook also
    makes validation leave the generators as it found them. Training then draws the same numbers
    whether or not, and how often, it is validated.
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self._loaded: dict | None = None
        self._before_val: dict | None = None

    @staticmethod
    def _states() -> dict:
        return dict(torch=torch.get_rng_state(), numpy=np.random.get_state(), python=random.getstate(),
                    cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])

    @staticmethod
    def _restore(states: dict) -> None:
        torch.set_rng_state(states['torch'])
        np.random.set_state(states['numpy'])
        random.setstate(states['python'])
        if states['cuda'] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states['cuda'])

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # the iteration a resume continues from (MMEngine's own count: inside an iteration, runner.iter is one less)
        checkpoint['random_state'] = dict(iter=checkpoint['meta']['iter'], **self._states())

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded = checkpoint.get('random_state')

    def before_train(self, runner) -> None:
        if not isinstance(runner.train_loop, IterBasedTrainLoop):
            self._restore_once(runner)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._restore_once(runner)  # iteration-based: after the loop skipped the batches trained before

    def _restore_once(self, runner) -> None:
        state, self._loaded = self._loaded, None
        if state is not None and state['iter'] == runner.iter:
            self._restore(state)

    def before_val(self, runner) -> None:
        self._before_val = self._states()

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            self._restore(self._before_val)
            self._before_val = None
