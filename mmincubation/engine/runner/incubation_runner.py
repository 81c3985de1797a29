"""Runs the Deep Incubation pipeline, meta -> incubate x K -> assemble -> fine-tune, from one config."""
from __future__ import annotations

import gc
import json
import time
from collections.abc import Sequence
from pathlib import Path

from mmengine.config import Config
from mmengine.dist import barrier, is_main_process
from mmengine.logging import print_log
from mmengine.runner import Runner

from ...assemble import assemble
from ...checkpoint import CheckpointError, load_fitting
from ...layout import ModuleLayout
from ...registry import RUNNERS
from .fit_checks import full_model_shapes
from .phase_config import build_layout, phase_layout, phase_recipe
from .phases import PHASES, TESTED, Phase
from .records import format_summary, write_record

DEFAULT_PHASES = ('meta', 'incubate', 'assemble', 'finetune')
#: Where a meta phase with a head warm-up keeps the meta model made of the pretrained network.
PRETRAINED_META = 'pretrained_meta.pth'


def phase_hooks(layout: ModuleLayout, phase: str, module: int | None = None,
                pretrained: dict | None = None) -> list[dict]:
    """The hooks every phase run gets: its record (cost in the blocks of the network it trains; what a meta
    model made of a pretrained network came from), the export of its tagged product and the random state
    kept in its checkpoints."""
    return [dict(type='mmincubation.PhaseRecordHook', phase=phase, module=module,
                 num_blocks=phase_layout(layout, phase, module).total_depth, pretrained=pretrained),
            dict(type='mmincubation.ExportWeightsHook', filename=Phase(phase, module).product_name, phase=phase,
                 layout=layout.tag()),
            dict(type='mmincubation.RandomStateHook')]


@RUNNERS.register_module()
class IncubationRunner:
    """Chains one ordinary MMEngine ``Runner`` per phase, each in its own work dir.

    A phase whose product file exists is skipped, an interrupted one resumes from its last
    checkpoint, so rerunning the same command continues the pipeline. ``modules`` restricts module
    incubation to some indices: that is how K machines share the work with no communication.

    Each phase runs the recipe :func:`phase_recipe` derives from the config, wired here: its work
    dir and product (:class:`Phase`), resume, the checkpoints it reads, and the hooks that record
    its cost and accuracy, export its product and keep its random state.
    """

    def __init__(self, cfg: Config, phases: Sequence[str] = DEFAULT_PHASES,
                 modules: Sequence[int] | None = None) -> None:
        unknown = [phase for phase in phases if phase not in PHASES]
        if unknown:
            raise ValueError(f'unknown phases {unknown}; choose from {PHASES}')
        self.cfg = cfg
        self.layout = build_layout(cfg)
        self.phases = [phase for phase in PHASES if phase in phases]  # always in pipeline order
        self.modules = list(range(self.layout.num_modules)) if modules is None else list(modules)
        for module in self.modules:
            self.layout.hybrid(module)  # validates the index
        self.work_dir = Path(cfg.work_dir)

    @classmethod
    def from_cfg(cls, cfg: Config) -> IncubationRunner:
        incubation = cfg.get('incubation') or {}
        return cls(cfg, phases=incubation.get('phases', DEFAULT_PHASES), modules=incubation.get('modules'))

    def product(self, phase: str, module: int | None = None) -> Path:
        return Phase(phase, module).product(self.work_dir)

    def train(self) -> None:
        for phase in self.phases:
            if phase == 'assemble':
                self.assemble()
            elif phase == 'incubate':
                for module in self.modules:
                    self.run_phase('incubate', module)
            else:
                self.run_phase(phase)
        for line in format_summary(self.work_dir):
            print_log(line, logger='current')

    def _require(self, phase: str, module: int | None = None) -> str:
        path = self.product(phase, module)
        if not path.is_file():
            what = f'the {phase} phase' if module is None else f'module {module}'
            raise CheckpointError(f'{path} is missing: run {what} first '
                                  f'(tools/train.py {self.cfg.filename} --phase {phase}'
                                  f'{"" if module is None else f" --module {module}"})')
        return str(path)

    def _tested(self, phase: str) -> bool:
        """Whether ``phase`` ends with a test on the test set (fine-tune and E2E, when the config has one)."""
        return phase in TESTED and bool(self.cfg.get('test_dataloader')) and self.cfg.get('test_cfg') is not None

    def finished(self, phase: str, module: int | None = None) -> bool:
        """A phase is finished when its product exists and, for a tested phase, its record holds the test.

        A run killed between writing the product and testing it is rerun: it resumes from its last
        checkpoint (the final epoch), so it trains no further, writes the same product and tests it.
        """
        if not self.product(phase, module).is_file():
            return False
        record = self.product(phase, module).parent / 'phase_record.json'
        return not self._tested(phase) or (record.is_file() and bool(json.loads(record.read_text())['test_metrics']))

    def run_config(self, phase: str, module: int | None = None) -> Config:
        """The phase's recipe wired for a run: work dir, resume, inputs, and the record/export/RNG hooks.

        An interrupted phase (a ``last_checkpoint`` in its work dir) resumes; an incubation reads the
        meta model, fine-tuning starts from the assembly (checked to fit first: MMEngine's
        ``load_from`` only warns about keys that do not fit).
        """
        cfg = phase_recipe(self.cfg, phase, module)
        work_dir = Phase(phase, module).work_dir(self.work_dir)
        cfg.work_dir = str(work_dir)
        stem = Path(self.cfg.filename or 'incubation').stem
        cfg.experiment_name = f'{stem}_{phase}{"" if module is None else f"_module_{module}"}_' \
                              f'{time.strftime("%Y%m%d_%H%M%S")}'
        cfg.resume = (work_dir / 'last_checkpoint').is_file()
        if phase == 'incubate':
            cfg.model.meta_checkpoint = self._require('meta')
        pretrained = None
        if phase == 'meta' and self.meta_from:  # a head warm-up of the meta model made of a pretrained network
            load_from, pretrained = self.make_meta(work_dir / PRETRAINED_META)
        else:
            load_from = self._require('assemble') if phase == 'finetune' else cfg.get('load_from')
        cfg.load_from = None if cfg.resume else load_from
        if cfg.load_from:
            load_fitting(cfg.load_from, full_model_shapes(cfg), holds='meta' if phase == 'meta' else 'full',
                         num_modules=self.layout.num_modules)
        cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + phase_hooks(self.layout, phase, module, pretrained)
        return cfg

    @property
    def meta_from(self) -> dict | None:
        return (self.cfg.get('incubation') or {}).get('meta_from')

    def make_meta(self, out: Path) -> tuple[str, dict]:
        """The meta model made of ``incubation.meta_from``'s pretrained network, written to ``out`` unless it is
        there already; returns its path and what it was made of (the tag's ``pretrained`` entry)."""
        from ...make_meta import pretrained_record, write_meta  # here: make_meta builds on the phase recipes
        if not out.is_file():
            if is_main_process():
                out.parent.mkdir(parents=True, exist_ok=True)
                write_meta(self.meta_from['checkpoint'], self.cfg, out, blocks=self.meta_from.get('blocks'),
                           cost=self.meta_from.get('cost'))
            barrier()
        return str(out), pretrained_record(out)

    def adopt_meta(self) -> None:
        """The meta phase without training: the made meta model is its product (``meta_from`` without warm-up)."""
        started = time.perf_counter()
        path, pretrained = self.make_meta(self.product('meta'))
        if is_main_process():
            write_record(Path(path).parent, dict(
                phase='meta', module=None, finished=True, num_blocks=self.layout.meta().total_depth, iters=0,
                images=0, cost=0.0, wall_seconds=time.perf_counter() - started, seconds_per_iter=None,
                history=[], test_metrics={}, pretrained=pretrained))
        print_log(f'meta model made of {self.meta_from["checkpoint"]} (blocks {pretrained["blocks"]}, head '
                  f'{pretrained["head"]}): {path}', logger='current')

    def run_phase(self, phase: str, module: int | None = None) -> None:
        product = self.product(phase, module)
        if self.finished(phase, module):
            print_log(f'{Phase(phase, module)} already finished: {product}', logger='current')
            return
        if phase == 'meta' and self.meta_from and not self.meta_from.get('warmup'):
            self.adopt_meta()
            return
        runner = Runner.from_cfg(self.run_config(phase, module))
        runner.train()
        if self._tested(phase):
            runner.test()
        del runner
        gc.collect()

    def assemble(self) -> None:
        out = self.product('assemble')
        if out.is_file():
            print_log(f'assembly already finished: {out}', logger='current')
            return
        if is_main_process():
            modules = [self._require('incubate', module) for module in range(self.layout.num_modules)]
            reference = full_model_shapes(phase_recipe(self.cfg, 'finetune'))
            assemble(modules, out, reference, self.layout)
            print_log(f'assembled {len(modules)} modules into {out}', logger='current')
        barrier()


