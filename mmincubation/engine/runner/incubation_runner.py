"""Runs the Deep Incubation pipeline, meta -> incubate x K -> assemble -> fine-tune, from one config."""
from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from pathlib import Path

from mmengine.config import Config
from mmengine.dist import barrier, is_main_process
from mmengine.logging import print_log
from mmengine.runner import Runner

from ...assemble import assemble
from ...checkpoint import CheckpointError, load_fitting
from ...registry import RUNNERS
from .fit_checks import full_model_shapes
from .phase_config import PHASES, build_layout, phase_config, phase_work_dir, product_name

DEFAULT_PHASES = ('meta', 'incubate', 'assemble', 'finetune')


@RUNNERS.register_module()
class IncubationRunner:
    """Chains one ordinary MMEngine ``Runner`` per phase, each in its own work dir.

    A phase whose product file exists is skipped, an interrupted one resumes from its last
    checkpoint, so rerunning the same command continues the pipeline. ``modules`` restricts module
    incubation to some indices: that is how K machines share the work with no communication.

    Work dir layout: ``meta/meta.pth``, ``incubate/module_<k>/module_<k>.pth``, ``assembled.pth``,
    ``finetune/finetuned.pth`` and ``e2e/e2e.pth``, each phase dir with its logs, checkpoints and
    ``phase_record.json`` (accuracy against training cost).
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
        if phase == 'assemble':
            return self.work_dir / 'assembled.pth'
        return phase_work_dir(str(self.work_dir), phase, module) / product_name(phase, module)

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
            what = f'module {module}' if module is not None else f'the {phase} phase'
            raise CheckpointError(f'{path} is missing: run {what} first '
                                  f'(tools/train.py {self.cfg.filename} --phase {phase}'
                                  f'{"" if module is None else f" --module {module}"})')
        return str(path)

    def _tested(self, phase: str) -> bool:
        """Whether ``phase`` ends with a test on the test set (fine-tune and E2E, when the config has one)."""
        return phase in ('finetune', 'e2e') and bool(self.cfg.get('test_dataloader')) and \
            self.cfg.get('test_cfg') is not None

    def finished(self, phase: str, module: int | None = None) -> bool:
        """A phase is finished when its product exists and, for a tested phase, its record holds the test.

        A run killed between writing the product and testing it is rerun: it resumes from its last
        checkpoint (the final epoch), so it trains no further, writes the same product and tests it.
        """
        if not self.product(phase, module).is_file():
            return False
        record = self.product(phase, module).parent / 'phase_record.json'
        return not self._tested(phase) or (record.is_file() and bool(json.loads(record.read_text())['test_metrics']))

    def run_phase(self, phase: str, module: int | None = None) -> None:
        product = self.product(phase, module)
        if self.finished(phase, module):
            print_log(f'{phase}{"" if module is None else f" module {module}"} already finished: {product}',
                      logger='current')
            return
        links = {}
        if phase == 'incubate':
            links['meta_checkpoint'] = self._require('meta')
        elif phase == 'finetune':
            links['init_checkpoint'] = self._require('assemble')
            links['cost_offset'] = sum(record['cost'] for record in load_records(self.work_dir)
                                       if record['phase'].startswith(('meta', 'incubate')))
        cfg = phase_config(self.cfg, phase, module, **links)
        if cfg.load_from:  # MMEngine's load_from only warns about keys that do not fit: refuse them first
            load_fitting(cfg.load_from, full_model_shapes(cfg), holds='meta' if phase == 'meta' else 'full',
                         num_modules=self.layout.num_modules)
        runner = Runner.from_cfg(cfg)
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
            reference = full_model_shapes(phase_config(self.cfg, 'finetune'))
            assemble(modules, out, reference)
            print_log(f'assembled {len(modules)} modules into {out}', logger='current')
        barrier()


def load_records(work_dir: str | Path) -> list[dict]:
    """Every ``phase_record.json`` under ``work_dir``, in phase order."""
    records = [json.loads(path.read_text()) for path in Path(work_dir).rglob('phase_record.json')]
    order = {phase: index for index, phase in enumerate(PHASES)}
    return sorted(records, key=lambda r: (order.get(r['phase'].split('_')[0], 99), r['phase']))


def method_results(work_dir: str | Path) -> dict[str, dict]:
    """Per method ('incubation', 'e2e') of a pipeline work dir: final test top-1, total cost, wall time.

    Incubation's cost sums every phase it paid for (meta, modules, fine-tune); a method whose final
    phase (fine-tune / E2E) has no record yet is left out.
    """
    records = load_records(work_dir)
    methods = {'incubation': ([r for r in records if r['phase'] != 'e2e'], 'finetune'),
               'e2e': ([r for r in records if r['phase'] == 'e2e'], 'e2e')}
    results = {}
    for name, (phases, final_phase) in methods.items():
        final = [r for r in phases if r['phase'] == final_phase]
        if final:
            results[name] = dict(top1=(final[0].get('test_metrics') or {}).get('accuracy/top1'),
                                 cost=sum(r['cost'] - r['cost_offset'] for r in phases),
                                 wall_seconds=sum(r['wall_seconds'] for r in phases))
    return results


def format_summary(work_dir: str | Path) -> list[str]:
    """A table of every recorded phase: blocks, iterations, wall time, s/iter, cost, last top-1."""
    lines = [f'{"phase":<18}{"blocks":>7}{"iters":>8}{"wall s":>9}{"s/iter":>9}{"cost (M blk-img)":>17}'
             f'{"val top-1":>11}{"test top-1":>12}']
    for record in load_records(work_dir):
        val = record['history'][-1]['metrics'].get('accuracy/top1') if record['history'] else None
        test = (record.get('test_metrics') or {}).get('accuracy/top1')
        lines.append(f'{record["phase"]:<18}{record["num_blocks"]:>7}{record["iters"]:>8}'
                     f'{record["wall_seconds"]:>9.1f}{record["seconds_per_iter"] or 0:>9.3f}'
                     f'{record["cost"] / 1e6:>17.2f}{_fmt(val):>11}{_fmt(test):>12}')
    return lines


def _fmt(value: float | None) -> str:
    return '-' if value is None else f'{value:.2f}'
