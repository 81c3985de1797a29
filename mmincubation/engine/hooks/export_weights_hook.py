"""Writes a phase's product (meta model, incubated module, fine-tuned model) when training ends."""
from __future__ import annotations

from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ...checkpoint import HOLDS_BY_PHASE, META_KEY, save_atomic
from ...registry import HOOKS


@HOOKS.register_module()
class ExportWeightsHook(Hook):
    """Save the trained weights, tagged with their phase and layout, to ``work_dir/filename``.

    A hybrid (:class:`~mmincubation.models.IncubationClassifier`) exports only its target module,
    keyed as in the full model; any other model exports its whole state dict. The file is written
    atomically, so its existence marks the phase as finished.

    The phase's intermediate checkpoints (MMEngine's ``epoch_N.pth``) get the same tag under
    ``meta.mmincubation``, with ``holds='hybrid'`` for an incubation's, so that no tool mistakes a
    half-trained hybrid or meta model for the full model.
    """

    priority = 'LOWEST'  # after the CheckpointHook wrote its last checkpoint

    def __init__(self, filename: str, phase: str, layout: dict) -> None:
        self.filename = filename
        self.phase = phase
        self.layout = dict(layout)  # ModuleLayout.tag() of the full model: depths, backbone kind, stages

    def _record(self, model, holds: str) -> dict:
        record = dict(phase=self.phase, **self.layout, holds=holds)
        if hasattr(model, 'target_module'):
            record['module'] = model.target_module
        return record

    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        holds = 'hybrid' if self.phase == 'incubate' else HOLDS_BY_PHASE[self.phase]
        checkpoint.setdefault('meta', {})[META_KEY] = self._record(self._model(runner), holds)

    @master_only
    def after_train(self, runner) -> None:
        model = self._model(runner)
        if hasattr(model, 'export_module'):
            state_dict = model.export_module()
        else:
            state_dict = {key: value.detach().cpu() for key, value in model.state_dict().items()}
        meta = {META_KEY: self._record(model, HOLDS_BY_PHASE[self.phase]),
                'dataset_meta': getattr(model, 'dataset_meta', None) or {}}
        path = save_atomic(dict(meta=meta, state_dict=state_dict), f'{runner.work_dir}/{self.filename}')
        runner.logger.info(f'{self.phase} phase exported {len(state_dict)} tensors to {path}')
