"""Writes a phase's product (meta model, incubated module, fine-tuned model) when training ends."""
from __future__ import annotations

from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ...checkpoint import META_KEY, save_atomic
from ...registry import HOOKS


@HOOKS.register_module()
class ExportWeightsHook(Hook):
    """Save the trained weights, tagged with their phase and layout, to ``work_dir/filename``.

    A hybrid (:class:`~mmincubation.models.IncubationClassifier`) exports only its target module,
    keyed as in the full model; any other model exports its whole state dict. The file is written
    atomically, so its existence marks the phase as finished.
    """

    priority = 'LOWEST'  # after the CheckpointHook wrote its last checkpoint

    def __init__(self, filename: str, phase: str, module_depths: tuple[int, ...]) -> None:
        self.filename = filename
        self.phase = phase
        self.module_depths = [int(d) for d in module_depths]

    @master_only
    def after_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        record = dict(phase=self.phase, layout=self.module_depths)
        if hasattr(model, 'export_module'):
            state_dict = model.export_module()
            record['module'] = model.target_module
        else:
            state_dict = {key: value.detach().cpu() for key, value in model.state_dict().items()}
        meta = {META_KEY: record, 'dataset_meta': getattr(model, 'dataset_meta', None) or {}}
        path = save_atomic(dict(meta=meta, state_dict=state_dict), f'{runner.work_dir}/{self.filename}')
        runner.logger.info(f'{self.phase} phase exported {len(state_dict)} tensors to {path}')
