"""Imported by the distributed test's config (``custom_imports``) in every torchrun worker.

* ``DDPProbeHook`` has each rank save its model's state dict before and after training, and the
  sample indices it trained on, to ``<phase work dir>/rank<r>_{before,after}.pth``.
"""
from __future__ import annotations

import os

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module(force=True)
class DDPProbeHook(Hook):
    """Saves what one rank holds: weights before/after training and the samples it trained on."""

    priority = 'VERY_LOW'

    def _dump(self, runner, stage: str, **extra) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        state = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
        trainable = sorted(name for name, param in model.named_parameters() if param.requires_grad)
        torch.save(dict(state_dict=state, trainable=trainable, wrapper=type(runner.model).__name__, **extra),
                   os.path.join(runner.work_dir, f'rank{get_rank()}_{stage}.pth'))

    def before_train(self, runner) -> None:
        self.samples: list[list[int]] = []
        self._dump(runner, 'before')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self.samples.append([int(sample.sample_idx) for sample in data_batch['data_samples']])

    def after_train(self, runner) -> None:
        self._dump(runner, 'after', samples=self.samples)
