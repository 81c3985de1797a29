"""Keeps a phase's accuracy history against its training cost, for reports and plots."""
from __future__ import annotations

import time
from pathlib import Path

from mmengine.dist import get_world_size, master_only
from mmengine.hooks import Hook

from ...registry import HOOKS
from ..runner.records import RECORD_FILE, PhaseRecord, read_record, write_record


@HOOKS.register_module()
class PhaseRecordHook(Hook):
    """Write ``work_dir/phase_record.json``: validation metrics after each evaluation, with cost.

    Training cost is counted in block-images: images seen times ``num_blocks`` of the trained
    network, the same unit for every phase, so incubation (meta + modules + fine-tune) and
    end-to-end training can be put on one axis. Each record holds its own phase's cost only; the
    summary adds up the phases a method paid for. ``module`` is the incubated module's index;
    ``pretrained`` what a meta model made of a pretrained network was made of and what that network
    cost to train (paid before, reported apart: see ``incubation.meta_from``).

    A resumed phase (one that starts past iteration 0) continues the record it finds in its work
    dir: the evaluations up to the resumed iteration and the wall time already spent.
    """

    priority = 'LOW'

    def __init__(self, phase: str, num_blocks: int, module: int | None = None, pretrained: dict | None = None) -> None:
        self.phase = phase
        self.module = module
        self.num_blocks = num_blocks
        self.pretrained = pretrained
        self.history: list[dict] = []
        self.test_metrics: dict[str, float] = {}
        self.started = 0.0
        self.wall_seconds = 0.0

    def before_train(self, runner) -> None:
        self.started = time.perf_counter()
        path = Path(runner.work_dir) / RECORD_FILE
        if runner.iter > 0 and path.is_file():  # resumed (load_from starts at iteration 0)
            earlier = read_record(path)
            self.history = [entry for entry in earlier['history'] if entry['iter'] <= runner.iter]
            self.started -= earlier['wall_seconds']

    def _images_seen(self, runner) -> int:
        return runner.iter * runner.train_dataloader.batch_size * get_world_size()

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        self.history.append(dict(epoch=runner.epoch, iter=runner.iter, images=self._images_seen(runner),
                                 cost=self._images_seen(runner) * self.num_blocks,
                                 metrics={k: float(v) for k, v in (metrics or {}).items()}))
        self._write(runner, finished=False)

    def after_train(self, runner) -> None:
        self.wall_seconds = time.perf_counter() - self.started
        self._write(runner, finished=True)

    def after_test_epoch(self, runner, metrics: dict | None = None) -> None:
        self.test_metrics = {k: float(v) for k, v in (metrics or {}).items()}
        self._write(runner, finished=True)

    @master_only
    def _write(self, runner, finished: bool) -> None:
        iter_time = runner.message_hub.log_scalars.get('train/time')
        record = PhaseRecord(
            phase=self.phase, module=self.module, finished=finished, num_blocks=self.num_blocks, iters=runner.iter,
            images=self._images_seen(runner), cost=self._images_seen(runner) * self.num_blocks,
            wall_seconds=self.wall_seconds if finished else time.perf_counter() - self.started,
            seconds_per_iter=float(iter_time.mean()) if iter_time else None,
            history=self.history, test_metrics=self.test_metrics, pretrained=self.pretrained)
        write_record(runner.work_dir, record)
