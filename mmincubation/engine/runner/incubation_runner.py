"""Runs the Deep Incubation pipeline, meta -> incubate x K -> assemble -> fine-tune, from one config."""
from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

from mmengine.config import Config
from mmengine.dist import barrier, broadcast_object_list, is_main_process
from mmengine.logging import print_log

from ...assemble import assemble
from ...checkpoint import CheckpointError, file_digest, load_fitting, read_torch_file
from ...layout import ModuleLayout
from ...phases import PHASE_TABLE, PHASES, TESTED, Phase, all_phases
from ...registry import RUNNERS
from ...tags import Tag
from .fit_checks import full_model_shapes
from .phase_config import RecipeError, build_layout, check_resumable, phase_layout, phase_recipe, recipe_fingerprint
from .phase_lock import PhaseLock, PhaseLocked
from .progress import Progress, Work
from .records import RECORD_FILE, PhaseRecord, format_summary, read_record, write_record
from .run_settings import check_pipeline_run_settings
from .strategies import build_phase_runner, check_launch, phase_runner_class

DEFAULT_PHASES = ('meta', 'incubate', 'assemble', 'finetune')
#: Where a meta phase with a head warm-up keeps the meta model made of the pretrained network, keyed by what it
#: is made of (the source's sha256 and the blocks taken), so that a changed source is never met by a stale one.
PRETRAINED_META = 'pretrained_meta_{key}.pth'


def phase_hooks(layout: ModuleLayout, phase: str, module: int | None = None,
                pretrained: dict | None = None, tag: Tag | None = None) -> list[dict]:
    """The hooks every phase run gets: a stop at the first non-finite loss, its record (cost in the blocks of
    the network it trains; what a meta model made of a pretrained network came from), the export of its
    tagged product (``tag``, default: layout and phase only; the hook adds the recipe itself, from the run's
    config) and the random state kept in its checkpoints."""
    tag = tag or Tag.of_layout(phase, layout.tag(), module=module)
    return [dict(type='mmincubation.FiniteLossHook', phase=str(Phase(phase, module))),
            dict(type='mmincubation.PhaseRecordHook', phase=phase, module=module,
                 num_blocks=phase_layout(layout, phase, module).total_depth, pretrained=pretrained),
            dict(type='mmincubation.ExportWeightsHook', filename=Phase(phase, module).product_name,
                 tag=tag.with_(recipe=None).to_dict()),
            dict(type='mmincubation.RandomStateHook')]


def _pretrained_inits(value: object, where: str) -> dict[str, str]:
    """``{setting: checkpoint}`` of every ``init_cfg=dict(type='Pretrained', checkpoint=...)`` under ``value``."""
    found = {}
    if isinstance(value, dict):
        if value.get('type') == 'Pretrained' and isinstance(value.get('checkpoint'), str):
            found[f'{where}.checkpoint'] = value['checkpoint']
        for key, item in value.items():
            found.update(_pretrained_inits(item, f'{where}.{key}'))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found.update(_pretrained_inits(item, f'{where}[{index}]'))
    return found


#: MMEngine's checkpoint files in a phase's work dir, numbered by epoch or iteration.
_CHECKPOINT = re.compile(r'(epoch|iter)_(\d+)\.pth$')


def _whole(path: Path) -> bool:
    """Whether ``path`` is a complete torch zip archive (a truncated one lacks its central directory)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith('/data.pkl') for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def resume_checkpoint(work_dir: Path) -> tuple[str | None, str]:
    """The checkpoint an interrupted phase resumes from, and what was done to find it (for the log).

    ``last_checkpoint`` names it (MMEngine writes that file in place: a full disk can leave it empty, and
    a checkpoint it names can be truncated or gone, or lie in another folder when the work dir was copied or moved).
    When it does not name a whole checkpoint of this folder, the newest whole ``epoch_N.pth`` / ``iter_N.pth`` of
    the folder is used; with none, the phase starts again.
    """
    last = work_dir / 'last_checkpoint'
    if not last.exists():
        return None, ''
    named = last.read_text().strip() if last.is_file() else ''
    # MMEngine writes an absolute path: in a copied or moved work dir it names the original's file, another run's
    outside = bool(named) and Path(named).parent.resolve() != work_dir.resolve()
    if named and not outside and Path(named).is_file() and _whole(Path(named)):
        return named, ''
    found = sorted((int(m.group(2)), path) for path in work_dir.iterdir() if (m := _CHECKPOINT.match(path.name)))
    why = (f'{last} is empty' if not named else f'{last} names {named}, outside {work_dir} (a copied or moved work '
           'dir)' if outside else f'{last} names {named}, which is missing or truncated')
    for _, path in reversed(found):
        if _whole(path):
            return str(path), f'{why}: resuming from {path}, the newest whole checkpoint'
    return None, f'{why} and no whole checkpoint is left: the phase starts again'


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
        self.retrain = list((cfg.get('incubation') or {}).get('retrain') or [])
        unknown = [phase for phase in self.retrain if phase not in PHASES]
        if unknown:
            raise ValueError(f'incubation.retrain: unknown phases {unknown}; choose from {PHASES}')
        idle = [phase for phase in self.retrain if phase not in self.phases]
        if idle:
            raise RecipeError(f'--retrain {" ".join(idle)}: not among the phases to run ({" ".join(self.phases)}); '
                              'add them to --phase')
        self._digests: dict[tuple, str] = {}

    @classmethod
    def from_cfg(cls, cfg: Config) -> IncubationRunner:
        """The runner a training tool builds from ``runner_type`` (ours or a stock one), its run settings checked
        (:func:`~.run_settings.check_pipeline_run_settings`)."""
        check_pipeline_run_settings(cfg)
        incubation = cfg.get('incubation') or {}
        return cls(cfg, phases=incubation.get('phases', DEFAULT_PHASES), modules=incubation.get('modules'))

    def product(self, phase: str, module: int | None = None) -> Path:
        return Phase(phase, module).product(self.work_dir)

    def runs(self) -> list[Phase]:
        """The phases this command runs, in order (one per module of ``incubate``)."""
        return [Phase(name, module) for name in self.phases
                for module in (self.modules if PHASE_TABLE[name].per_module else [None])]

    def work(self, phase: Phase) -> Work:
        """How much training ``phase`` is: blocks x epochs (or x iterations), for the ETA (:mod:`.progress`)."""
        if not phase.spec.trains or (phase.name == 'meta' and self.meta_from and not self.meta_from.get('warmup')):
            return 'none', 0
        train_cfg = phase_recipe(self.cfg, phase.name, phase.module).get('train_cfg') or {}
        blocks = phase_layout(self.layout, phase.name, phase.module).total_depth
        if 'max_iters' in train_cfg:
            return 'block-iterations', blocks * train_cfg['max_iters']
        return 'block-epochs', blocks * train_cfg.get('max_epochs', 1)

    def train(self) -> None:
        """Run the phases in order, each announced with the pipeline's ETA (``phase 3/8: incubate module 1 of 4``)."""
        if self.retrain:
            self.set_aside()
        runs = self.runs()
        for phase in runs:  # every phase's runner settings, before anything trains
            if phase.spec.trains:
                recipe = phase_recipe(self.cfg, phase.name, phase.module)
                phase_runner_class(recipe, f'incubation.{phase.name}')
                check_launch(recipe, f'incubation.{phase.name}')
        progress = Progress(len(runs), noun='phase')
        for index, phase in enumerate(runs, 1):
            left = [(kind, 0) if later.product(self.work_dir).is_file() else (kind, amount)
                    for later in runs[index - 1:] for kind, amount in [self.work(later)]]
            print_log(progress.announce(index, phase.title(self.layout.num_modules), left), logger='current')
            started = time.perf_counter()
            ran = self.assemble() if phase.name == 'assemble' else self.run_phase(phase.name, phase.module)
            if ran:
                progress.done(self.work(phase), time.perf_counter() - started)
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
        """A phase is finished when its product exists and fits, and, for a tested phase, its record holds the test.

        Fits: the product's tag (:meth:`Tag.misfit`) equals the one this config would write: contents,
        backbone and layout, module, the recipe's fingerprint and the digests of the input files now on
        disk. A run killed between writing the product and testing it is rerun: it resumes from its last
        checkpoint (the final epoch), so it trains no further, writes the same product and tests it.

        Raises:
            CheckpointError: the product exists but does not fit: naming it, the first difference and how
                to go on (another work dir, or ``--retrain`` of the phase and every phase made from it).
        """
        product = self.product(phase, module)
        if not product.is_file():
            return False
        self.check_fits(product, self.expected_tag(phase, module), Phase(phase, module))
        self.check_lineage(phase, module)
        record = product.parent / RECORD_FILE
        return not self._tested(phase) or (record.is_file() and bool(read_record(record)['test_metrics']))

    def check_lineage(self, phase: str, module: int | None = None) -> None:
        """Refuse a phase made from products, direct or not, that do not fit this config (:meth:`check_fits`).

        Their files are checked where they are on disk; one that is gone is not judged (its digest, recorded
        in the products made from it, no longer matches anything a rerun could make).
        """
        for made_from in Phase(phase, module).inputs(self.layout.num_modules):
            path = made_from.product(self.work_dir)
            if path.is_file():
                self.check_fits(path, self.expected_tag(made_from.name, made_from.module), made_from)
                self.check_lineage(made_from.name, made_from.module)

    def check_fits(self, path: Path, expected: Tag, phase: Phase, what: str = '') -> None:
        """Refuse ``path`` when its tag differs from ``expected`` (see :meth:`finished`)."""
        try:
            tag = Tag.of_checkpoint(read_torch_file(path, mmap=True))
        except (KeyError, TypeError, ValueError) as error:  # CheckpointError is a ValueError too
            raise CheckpointError(f'{path} cannot be read as the {phase} phase\'s {what or "product"} ({error}): '
                                  f'--retrain {phase.name} sets it aside and trains the phase again') from error
        misfit = 'it has no mmincubation tag' if tag is None else tag.misfit(expected)
        if misfit:
            raise CheckpointError(
                f'{path} does not fit this config ({misfit}): use another --work-dir, or --retrain '
                f'{phase.name} to set it and every phase made from it aside and train them again')

    def _digest(self, path: Path) -> str:
        """sha256 of ``path``, remembered while its size and modification time stay the same."""
        if not path.is_file():
            return 'missing'
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self._digests:
            self._digests[key] = file_digest(path)
        return self._digests[key]

    def input_digests(self, phase: str, module: int | None = None) -> dict[str, str]:
        """``{file name: sha256}`` of the files ``phase`` is made from that are on disk now.

        A file that is gone is not judged (e.g. the modules of an assembly converted from an official
        checkpoint, or moved away once assembled): what was made from it is checked by keys and shapes.
        """
        return {name: digest for name, digest in self._input_digests(phase, module).items() if digest != 'missing'}

    def _input_digests(self, phase: str, module: int | None) -> dict[str, str]:
        inputs = {made_from.product_name: self._digest(made_from.product(self.work_dir))
                  for made_from in Phase(phase, module).inputs(self.layout.num_modules)}
        if phase == 'meta' and self.meta_from:
            inputs['pretrained'] = self._digest(Path(self.meta_from['checkpoint']))
        spec = PHASE_TABLE[phase]
        if not spec.trains:
            return inputs
        recipe = phase_recipe(self.cfg, phase, module)
        if recipe.get('load_from') and spec.reads != 'load_from':  # a checkpoint the user starts the phase from
            inputs['load_from'] = self._digest(Path(recipe.load_from))
        for setting, path in _pretrained_inits(recipe.model, 'model').items():  # init_cfg=dict(type='Pretrained')
            inputs[setting] = self._digest(Path(path))
        return inputs

    def expected_tag(self, phase: str, module: int | None = None) -> Tag:
        """The tag this config writes on ``phase``'s product (:class:`~mmincubation.tags.Tag`).

        A meta model made by ``tools/make_meta.py`` (its tag names what it was ``pretrained`` from) is the meta
        phase's product when the config trains the meta model itself: only its layout is compared then.
        """
        fields = dict(module=module, inputs=self.input_digests(phase, module))
        if phase == 'meta' and not self.meta_from and self._made_by_make_meta():
            return Tag.of_layout(phase, self.layout.tag())
        if PHASE_TABLE[phase].trains:  # the adopted meta model of meta_from too: made for that recipe
            recipe = phase_recipe(self.cfg, phase, module)
            fields['recipe'], fields['fingerprint'] = recipe_fingerprint(recipe)
            fields['weights'] = 'ema' if any(str(hook.get('type', '')).endswith('EMAHook')
                                             for hook in recipe.get('custom_hooks') or []) else 'raw'
            if phase == 'meta' and self.meta_from and not self.meta_from.get('warmup'):
                fields['weights'] = 'raw'
        return Tag.of_layout(phase, self.layout.tag(), **fields)

    def _made_by_make_meta(self) -> bool:
        product = self.product('meta')
        if not product.is_file():
            return False
        try:
            tag = Tag.of_checkpoint(read_torch_file(product, mmap=True))
        except (KeyError, TypeError, ValueError):
            return False
        return tag is not None and bool(tag.extra.get('pretrained')) and not tag.fingerprint

    def _fits(self, phase: Phase) -> bool:
        """Whether what ``phase`` left in its folder fits this config: its product, else the checkpoint it would
        resume from (True when it left neither)."""
        path, tag = phase.product(self.work_dir), self.expected_tag(phase.name, phase.module)
        if not path.is_file() and phase.spec.work_dir:
            resume_from, _ = resume_checkpoint(phase.work_dir(self.work_dir))
            path, tag = Path(resume_from or path), tag.with_(holds=phase.spec.checkpoint_holds)
        if not path.is_file():
            return True
        try:
            self.check_fits(path, tag, phase)
        except CheckpointError:
            return False
        return True

    def set_aside(self) -> None:
        """``incubation.retrain`` (``--retrain``): move what the named phases left that does not fit this config, and
        whatever was made from it, to ``<work dir>/replaced/<time>/`` (nothing is deleted), so they train again.

        A phase whose product (or interrupted run) fits is kept, so a requeued job whose command still says
        ``--retrain`` resumes instead of starting over. Each phase is locked while it is moved: one that another
        process is writing is refused (:class:`~.phase_lock.PhaseLocked`).
        """
        num_modules = self.layout.num_modules
        named = [Phase(name, module) for name in self.retrain
                 for module in (self.modules if PHASE_TABLE[name].per_module else [None])]
        candidates = sorted({later for phase in named for later in [phase, *phase.dependents(num_modules)]},
                            key=lambda p: p.order)
        if not is_main_process():
            barrier()
            return
        aside, moved = self.work_dir / 'replaced' / time.strftime('%Y%m%d_%H%M%S'), []
        for phase in candidates:
            made_from_moved = any(earlier in moved for earlier in phase.inputs(num_modules))
            if not made_from_moved and self._fits(phase):
                if phase in named:
                    print_log(f'--retrain {phase}: what it left fits this config, kept', logger='current')
                continue
            source = phase.work_dir(self.work_dir) if phase.spec.work_dir else phase.product(self.work_dir)
            moved.append(phase)
            if not source.exists():
                continue
            with PhaseLock(phase.lock_file(self.work_dir), str(phase)):
                target = aside / source.relative_to(self.work_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, target)
                if phase.spec.work_dir:  # our lock moved with the folder
                    (target / phase.lock_file(self.work_dir).name).unlink(missing_ok=True)
            print_log(f'--retrain {phase}: {source} set aside in {target}', logger='current')
        barrier()

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
        cfg.experiment_name = f'{stem}_{phase}{"" if module is None else f"_module_{module}"}'  # MMEngine adds the time
        check_resumable(cfg, str(Phase(phase, module)))
        resume_from, why = resume_checkpoint(work_dir)
        if why:
            print_log(why, logger='current', level=30)
        cfg.resume = resume_from is not None
        tag = self.expected_tag(phase, module)
        if resume_from:
            self.check_fits(Path(resume_from), tag.with_(holds=PHASE_TABLE[phase].checkpoint_holds),
                            Phase(phase, module), 'checkpoint to resume from')
        spec = PHASE_TABLE[phase]
        if spec.reads:  # the input product goes where the phase's row says (the meta model, the assembly)
            (made_from, ) = Phase(phase, module).inputs(self.layout.num_modules)
            cfg.merge_from_dict({spec.reads: self._require(made_from.name, made_from.module)})
        pretrained = None
        if phase == 'meta' and self.meta_from:  # a head warm-up of the meta model made of a pretrained network
            key = hashlib.sha256(json.dumps([self.input_digests('meta')['pretrained'],
                                             self.meta_from.get('blocks')]).encode()).hexdigest()[:16]
            load_from, pretrained = self.make_meta(work_dir / PRETRAINED_META.format(key=key))
        else:
            load_from = cfg.get('load_from')
        cfg.load_from = resume_from if cfg.resume else load_from
        if cfg.load_from and not cfg.resume:
            load_fitting(cfg.load_from, full_model_shapes(cfg), holds='meta' if phase == 'meta' else 'full',
                         num_modules=self.layout.num_modules)
        cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + phase_hooks(self.layout, phase, module, pretrained,
                                                                             tag)
        self._one_pipeline_in_trackers(cfg, Phase(phase, module))
        return cfg

    def _one_pipeline_in_trackers(self, cfg: Config, phase: Phase) -> None:
        """Experiment trackers (every visualizer backend but ``LocalVisBackend``) show one pipeline: one shared
        folder (``<work dir>/vis_data``; TensorBoard merges the phases' event files there), W&B runs grouped by
        pipeline and named by phase, and every phase's scalars on the pipeline's cost axis
        (:class:`~mmincubation.engine.hooks.PipelineVisHook`)."""
        trackers = [backend for backend in (cfg.get('visualizer') or {}).get('vis_backends') or []
                    if not str(backend.get('type', '')).endswith('LocalVisBackend')]
        if not trackers:
            return
        for backend in trackers:
            backend.setdefault('save_dir', str(self.work_dir / 'vis_data'))
            if str(backend.get('type', '')).endswith('WandbVisBackend'):
                init = backend.setdefault('init_kwargs', {})
                init.setdefault('group', Path(self.cfg.filename or 'incubation').stem)
                init.setdefault('name', phase.label)
                init.setdefault('job_type', phase.name)
        earlier = []
        for before in all_phases(self.layout.num_modules):
            if before.order >= phase.order:
                break
            kind, amount = self.work(before)
            if amount and phase.spec.method in before.spec.counted_by:
                blocks = phase_layout(self.layout, before.name, before.module).total_depth
                length = amount / blocks
                earlier.append([blocks, length, None] if kind == 'block-epochs' else [blocks, None, length])
        cfg.custom_hooks.append(dict(type='mmincubation.PipelineVisHook', label=phase.label,
                                     num_blocks=phase_layout(self.layout, phase.name, phase.module).total_depth,
                                     earlier=earlier))

    @property
    def meta_from(self) -> dict | None:
        return (self.cfg.get('incubation') or {}).get('meta_from')

    def make_meta(self, out: Path, recipe: tuple[str, str] | None = None) -> tuple[str, dict]:
        """The meta model made of ``incubation.meta_from``'s pretrained network, written to ``out`` unless it is
        there already (tagged with ``recipe``, the meta phase's, when it is the product); returns its path and
        what it was made of (the tag's ``pretrained`` entry)."""
        from ...make_meta import pretrained_record, write_meta  # here: make_meta builds on the phase recipes
        if not out.is_file():
            if is_main_process():
                out.parent.mkdir(parents=True, exist_ok=True)
                write_meta(self.meta_from['checkpoint'], self.cfg, out, blocks=self.meta_from.get('blocks'),
                           cost=self.meta_from.get('cost'), ema=bool(self.meta_from.get('ema')), recipe=recipe)
            barrier()
        return str(out), pretrained_record(out)

    def adopt_meta(self) -> None:
        """The meta phase without training: the made meta model is its product (``meta_from`` without warm-up)."""
        started = time.perf_counter()
        expected = self.expected_tag('meta')
        path, pretrained = self.make_meta(self.product('meta'), (expected.recipe, expected.fingerprint))
        if is_main_process():
            write_record(Path(path).parent, PhaseRecord(
                phase='meta', finished=True, num_blocks=self.layout.meta().total_depth,
                wall_seconds=time.perf_counter() - started, pretrained=pretrained))
        print_log(f'meta model made of {self.meta_from["checkpoint"]} (blocks {pretrained["blocks"]}, head '
                  f'{pretrained["head"]}): {path}', logger='current')

    def locked(self, phase: str, module: int | None = None) -> PhaseLock | None:
        """The lock of ``phase``'s folder, taken on the main process (one writer per phase: :mod:`.phase_lock`);
        every rank learns whether it was taken, so a refused job stops on all of them."""
        lock, refused = PhaseLock(Phase(phase, module).lock_file(self.work_dir), str(Phase(phase, module))), ''
        if is_main_process():
            try:
                lock.acquire()
            except PhaseLocked as error:
                refused = str(error)
        shared = [refused]
        broadcast_object_list(shared)
        if shared[0]:
            raise PhaseLocked(shared[0])
        return lock if is_main_process() else None

    def run_phase(self, phase: str, module: int | None = None) -> bool:
        """Train ``phase`` unless it is finished; returns whether it ran."""
        product = self.product(phase, module)
        if self.finished(phase, module):
            print_log(f'{Phase(phase, module)} already finished: {product}', logger='current')
            return False
        lock = self.locked(phase, module)
        try:
            if self.finished(phase, module):  # another job finished it while we waited for nothing
                return False
            self.check_lineage(phase, module)  # what it is made from fits this config too
            if phase == 'meta' and self.meta_from and not self.meta_from.get('warmup'):
                self.adopt_meta()
                return True
            runner = build_phase_runner(self.run_config(phase, module), f'incubation.{phase}')
            runner.train()
            if self._tested(phase):
                runner.test()
            del runner
            gc.collect()
            return True
        finally:
            if lock is not None:
                lock.release()

    def assemble(self) -> bool:
        """Assemble the modules unless the assembly is finished; returns whether it ran."""
        out = self.product('assemble')
        if self.finished('assemble'):
            print_log(f'assembly already finished: {out}', logger='current')
            return False
        lock = self.locked('assemble')
        try:
            self.check_lineage('assemble')
            if is_main_process() and not self.finished('assemble'):
                modules = [self._require('incubate', module) for module in range(self.layout.num_modules)]
                reference = full_model_shapes(phase_recipe(self.cfg, 'finetune'))
                assemble(modules, out, reference, self.layout)
                print_log(f'assembled {len(modules)} modules into {out}', logger='current')
        finally:
            if lock is not None:
                lock.release()
        barrier()
        return True


