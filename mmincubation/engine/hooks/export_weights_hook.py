"""Writes a phase's product (meta model, incubated module, fine-tuned model) when training ends."""
from __future__ import annotations

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import EMAHook, Hook
from mmengine.model import is_model_wrapper
from torch import nn

from ...checkpoint import check_finite, save_atomic
from ...phases import PHASE_TABLE
from ...registry import HOOKS
from ...tags import META_KEY, Tag


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict (keys as the unwrapped model's), detached on the CPU, on the main process;
    ``{}`` on the others. Under FSDP it is gathered from the shards (torch's full state dict, ``rank0_only``):
    a collective, so every rank calls it."""
    from torch.distributed.fsdp import FullStateDictConfig, FullyShardedDataParallel, StateDictType
    if isinstance(model, FullyShardedDataParallel):
        # offloading on a CPU-only machine crashes torch 2.13's FSDP (see engine/runner/strategies.py)
        config = FullStateDictConfig(offload_to_cpu=torch.cuda.is_available(), rank0_only=True)
        with FullyShardedDataParallel.state_dict_type(model, StateDictType.FULL_STATE_DICT, config):
            state = model.state_dict()
    else:
        state = (model.module if is_model_wrapper(model) else model).state_dict()
    return {key: value.detach().cpu() for key, value in state.items()} if is_main_process() else {}


@HOOKS.register_module()
class ExportWeightsHook(Hook):
    """Save the trained weights, tagged (:class:`~mmincubation.tags.Tag`), to ``work_dir/filename``.

    A hybrid (:class:`~mmincubation.models.IncubationClassifier`) exports only its target module,
    keyed as in the full model; any other model exports its whole state dict. The file is written
    atomically, so a product is whole or absent; weights with NaN or Inf are refused
    (:func:`~mmincubation.checkpoint.check_finite`), nothing is written.

    With MMEngine's ``EMAHook`` in the run, the product is the averaged (EMA) model, the one every
    validation scored: it is copied into the model when training ends, so the phase's test scores
    it too, and the tag says ``weights='ema'``.

    The phase's intermediate checkpoints (MMEngine's ``epoch_N.pth``) get the same tag under
    ``meta.mmincubation``, holding what the phase's row says of them (``'hybrid'`` for an
    incubation's), so that no tool mistakes a half-trained hybrid or meta model for the full model;
    a checkpoint of non-finite weights is refused before it is written.

    The tag's ``recipe`` is read from the run's config when training starts
    (:func:`~mmincubation.engine.runner.phase_config.recipe_fingerprint`); a ``fingerprint`` given in
    ``tag`` (what the runner expects) must equal it.

    Args:
        filename: the product's file name in the run's work dir.
        tag: the product's tag as a dict (:meth:`Tag.to_dict`): phase, layout, module, fingerprint, inputs.

    Raises:
        RuntimeError: the run's recipe is not the one the runner derived (a fingerprint mismatch).
    """

    priority = 'LOWEST'  # after the CheckpointHook wrote its last checkpoint

    def __init__(self, filename: str, tag: dict) -> None:
        self.filename = filename
        self.tag = Tag.from_dict(tag)

    def before_train(self, runner) -> None:
        from ..runner.phase_config import recipe_fingerprint  # here: the runner package imports the hooks
        recipe, fingerprint = recipe_fingerprint(runner.cfg)
        if self.tag.fingerprint and fingerprint != self.tag.fingerprint:
            raise RuntimeError(f'the {self.tag.phase} run\'s config (fingerprint {fingerprint[:12]}) is not the recipe '
                               f'the runner derived ({self.tag.fingerprint[:12]}): a setting outside the recipe '
                               'changed what the phase trains')
        self.tag = self.tag.with_(recipe=recipe, fingerprint=fingerprint)

    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    @staticmethod
    def _ema_hook(runner) -> EMAHook | None:
        return next((hook for hook in runner.hooks if isinstance(hook, EMAHook)), None)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        check_finite(checkpoint['state_dict'], f'the {self.tag.phase} phase\'s checkpoint at iteration {runner.iter}')
        holds = PHASE_TABLE[self.tag.phase].checkpoint_holds
        checkpoint.setdefault('meta', {})[META_KEY] = self.tag.with_(holds=holds).to_dict()

    def after_train(self, runner) -> None:
        ema = self._ema_hook(runner)
        model = self._model(runner)
        if ema is not None:  # every rank: the EMA weights become the model's, for the test and the export
            model.load_state_dict(ema.ema_model.module.state_dict())
        state_dict = full_state_dict(runner.model)  # every rank: gathered from FSDP's shards
        if is_main_process():
            self._export(runner, model, state_dict, 'ema' if ema is not None else 'raw')

    def _export(self, runner, model: nn.Module, state_dict: dict, weights: str) -> None:
        if hasattr(model, 'export_module'):
            state_dict = model.export_module(state_dict)
        path = f'{runner.work_dir}/{self.filename}'
        check_finite(state_dict, f'the {self.tag.phase} phase\'s product {path} (not written)')
        # what MMEngine's own checkpoints carry: the training set's metainfo (class names), so that inference
        # APIs and downstream tools can name the classes of a product
        dataset = getattr(runner.train_dataloader, 'dataset', None)
        dataset_meta = dict(getattr(dataset, 'metainfo', None) or getattr(model, 'dataset_meta', None) or {})
        meta = self.tag.with_(weights=weights).meta(dataset_meta=dataset_meta)
        save_atomic(dict(meta=meta, state_dict=state_dict), path)
        runner.logger.info(f'{self.tag.phase} phase exported {len(state_dict)} tensors ({weights} weights) to {path}')
