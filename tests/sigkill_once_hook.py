"""A hook for tests: the process SIGKILLs itself once per work dir, as a preempted or OOM-killed job dies.

Imported by test configs through ``custom_imports`` (tests/ on ``PYTHONPATH``).
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SigkillOnceHook(Hook):
    """After training iteration ``at_iter`` (1-based), kill the process unless this work dir was killed before."""

    def __init__(self, at_iter: int) -> None:
        self.at_iter = at_iter

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        marker = Path(runner.work_dir) / '.killed_once'
        if runner.iter + 1 == self.at_iter and not marker.exists():  # the loop counts the iteration after hooks
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
