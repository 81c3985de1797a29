"""Each phase on the runner and strategy its recipe names: MMEngine's ``Runner``, or its ``FlexibleRunner`` with a
strategy (``DDPStrategy``, ``FSDPStrategy``; ``DeepSpeedStrategy`` is refused), as mmpretrain's large-model recipes do
(``mmpretrain::mae/benchmarks/vit-huge-p14_8xb128-fsdp-coslr-50e_in1k.py``)::

    incubation = dict(
        incubate=dict(runner_type='FlexibleRunner', strategy=dict(type='DDPStrategy')),
        finetune=dict(runner_type='FlexibleRunner', strategy=dict(type='FSDPStrategy'),
                      activation_checkpointing='blocks'))

A phase whose recipe has a ``strategy`` and no ``runner_type`` runs on the ``FlexibleRunner`` (a top-level
``strategy``, e.g. inherited from an mmpretrain FSDP config, applies to every phase); ``runner_type='Runner'``
with a ``strategy`` is refused: the stock ``Runner`` has no strategies and would drop it silently.

What the pipeline needs of FSDP, filled in where the strategy leaves it open (``FSDPStrategy`` in
``mmengine/_strategy/fsdp.py``):

* every block of the phase's network is an FSDP unit of its own (``ModuleWrapPolicy`` of the blocks' classes),
  so a frozen meta block never shares a flat parameter with a trained one, and ``use_orig_params=True``: with
  frozen and trained parameters in one unit FSDP keeps gradient memory as if nothing were frozen (PyTorch
  #104690). MMEngine 0.10.7 cannot take ``ModuleWrapPolicy`` from a config (a dict policy is wrapped in
  ``functools.partial`` and called as a function), so the policy object is set here;
* full state dicts (``state_dict_cfg='full'``): a product and a checkpoint to resume from are whole files, as
  under DDP; a ``'local'`` (sharded) one is refused, its ``rankN.pth`` folders being no product;
* without CUDA (the tests: gloo on CPU) the wrapper's ``device_id`` is the CPU (MMEngine passes ``LOCAL_RANK``,
  a CUDA index) and state dicts are not "offloaded to the CPU" (torch 2.13's FSDP crashes copying CPU tensors
  to the CPU); DDP's ``device_ids`` is None, as :mod:`mmincubation.launcher` sets for the ``Runner``.

The runner setting ``activation_checkpointing`` (names, or ``'blocks'`` expanded by the recipe) is applied by
:class:`PhaseFlexibleRunner` too: MMEngine's ``FlexibleRunner`` ignores it.
"""
from __future__ import annotations

import copy

import torch
from mmengine._strategy import FSDPStrategy
from mmengine.config import Config
from mmengine.runner import FlexibleRunner

from ...compat import turn_on_activation_checkpointing
from ...registry import RUNNERS, STRATEGIES
from .phase_config import RecipeError, network_blocks
from .phase_runner import PhaseRunner, _PhaseConsole

STOCK_RUNNERS = ('Runner', 'mmengine.Runner')
FLEXIBLE_RUNNERS = ('FlexibleRunner', 'mmengine.FlexibleRunner')


def strategy_type(strategy: dict | None) -> str:
    """``'FSDPStrategy'`` for ``dict(type='mmengine.FSDPStrategy')``; '' without a strategy."""
    return str((strategy or {}).get('type', '')).split('.')[-1]


def fill_strategy(strategy: dict, cuda: bool) -> dict:
    """A copy of a phase's ``strategy`` with what the pipeline needs of it filled in (module docstring).

    Raises:
        RecipeError: an FSDP ``state_dict_cfg`` other than ``'full'`` (a product must be one file).
    """
    strategy = copy.deepcopy(dict(strategy))
    kind = strategy_type(strategy)
    wrapper = dict(strategy.get('model_wrapper') or {})
    if kind == 'FSDPStrategy':
        strategy['type'] = 'mmincubation.PhaseFSDPStrategy'
        state_dict_cfg = strategy.get('state_dict_cfg', 'full')
        if state_dict_cfg != 'full':
            raise RecipeError(f"strategy.state_dict_cfg={state_dict_cfg!r}: a phase's checkpoints and product must be "
                              "whole state dicts (FSDP's full ones, gathered once); set state_dict_cfg='full'")
        full = dict(rank0_only=True, offload_to_cpu=cuda)
        strategy['state_dict_cfg'] = dict(
            state_dict_type='FULL_STATE_DICT', state_dict_config=dict(type='FullStateDictConfig', **full),
            optim_state_dict_config=dict(type='FullOptimStateDictConfig', **full))
        wrapper.setdefault('type', 'MMFullyShardedDataParallel')
        wrapper.setdefault('use_orig_params', True)
        if not cuda:
            wrapper.setdefault('device_id', 'cpu')
    elif kind == 'DDPStrategy':
        wrapper.setdefault('type', 'MMDistributedDataParallel')
        wrapper.setdefault('broadcast_buffers', False)
        if not cuda:
            wrapper.setdefault('device_ids', None)
    if wrapper:
        strategy['model_wrapper'] = wrapper
    return strategy


@STRATEGIES.register_module()
class PhaseFSDPStrategy(FSDPStrategy):
    """MMEngine 0.10.7's ``FSDPStrategy`` whose optimizer state survives a resume.

    Its ``load_optim_state_dict`` passes ``FSDP.optim_state_dict_to_load`` the state dict first, the order of
    torch 1.x: today's takes ``(model, optim, optim_state_dict)``, so every resume of an FSDP run failed
    ('unhashable type: dict'). Its ``optim_state_dict`` hands FSDP the optimizer *wrapper*; here FSDP gets the
    optimizer, and an ``AmpOptimWrapper``'s loss scaler is saved and restored beside it, as
    ``OptimWrapper.state_dict`` does.
    """

    def optim_state_dict(self) -> dict:
        from torch.distributed.fsdp import FullyShardedDataParallel
        state = FullyShardedDataParallel.optim_state_dict(self.model, self.optim_wrapper.optimizer)
        scaler = getattr(self.optim_wrapper, 'loss_scaler', None)
        if scaler is not None:
            state['loss_scaler'] = scaler.state_dict()
        return state

    def load_optim_state_dict(self, state_dict: dict) -> None:
        from torch.distributed.fsdp import FullyShardedDataParallel
        state_dict = dict(state_dict)
        scaler = state_dict.pop('loss_scaler', None)
        optimizer = self.optim_wrapper.optimizer
        optimizer.load_state_dict(FullyShardedDataParallel.optim_state_dict_to_load(self.model, optimizer, state_dict))
        if scaler is not None:
            self.optim_wrapper.loss_scaler.load_state_dict(scaler)


@RUNNERS.register_module()
class PhaseFlexibleRunner(_PhaseConsole, FlexibleRunner):
    """MMEngine's ``FlexibleRunner`` for one phase: its strategy filled in (:func:`fill_strategy`), the model built
    at once so that its blocks become FSDP units and ``activation_checkpointing`` applies; the console log as
    :class:`~.phase_runner.PhaseRunner`'s."""

    def __init__(self, *args, **kwargs) -> None:
        # FlexibleRunner writes data_preprocessor into the model dict it is given, which from_cfg takes from the
        # config: a copy keeps runner.cfg the phase's recipe (its fingerprint is checked by ExportWeightsHook)
        kwargs['model'] = copy.deepcopy(kwargs['model'])
        super().__init__(*args, **kwargs)
        blocks = network_blocks(self.cfg.model)
        self.model = self.strategy.build_model(self.model)  # FlexibleRunner builds it in train(); a module passes
        if self.cfg.get('activation_checkpointing'):
            turn_on_activation_checkpointing(self.model, self.cfg.activation_checkpointing)
        wrapper = self.strategy.model_wrapper
        if strategy_type(self.cfg.strategy) == 'FSDPStrategy' and wrapper.get('auto_wrap_policy') is None:
            from torch.distributed.fsdp.wrap import ModuleWrapPolicy
            wrapper['auto_wrap_policy'] = ModuleWrapPolicy({type(self.model.get_submodule(name)) for name in blocks})

    def build_strategy(self, strategy=None, **kwargs):  # noqa: ANN001,ANN201 (MMEngine's signature)
        if isinstance(strategy, dict):
            strategy = fill_strategy(strategy, torch.cuda.is_available())
        return super().build_strategy(strategy, **kwargs)


def build_phase_runner(cfg: Config) -> PhaseRunner | FlexibleRunner:
    """The runner of one phase's run config: its ``runner_type`` (``Runner`` by default, ``FlexibleRunner`` when
    it names a ``strategy``), built by its ``from_cfg``; a user's own registered runner class is built as it is.

    Raises:
        RecipeError: a ``strategy`` on the stock ``Runner``, a ``runner_type`` no registry knows, an ``EMAHook``
            under FSDP (its averaged copy of the model is not sharded), or ``DeepSpeedStrategy`` (not supported yet).
    """
    runner_type = cfg.get('runner_type')
    kind = strategy_type(cfg.get('strategy'))
    if runner_type in STOCK_RUNNERS and kind:
        raise RecipeError(f"runner_type={runner_type!r} with strategy={kind!r}: MMEngine's Runner has no strategies "
                          "and would train without it; set runner_type='FlexibleRunner' in the phase's section")
    if kind == 'DeepSpeedStrategy':
        raise RecipeError('strategy=DeepSpeedStrategy is not supported yet: a phase\'s checkpoints and product must be '
                          'whole state dicts, which the pipeline gathers from FSDP\'s shards but not from ZeRO\'s '
                          "partitions; use strategy=dict(type='FSDPStrategy') (ZeRO-3's sharding of parameters, "
                          'gradients and optimizer states) or DDPStrategy')
    if kind == 'FSDPStrategy' and any(str(hook.get('type', '')).endswith('EMAHook')
                                      for hook in cfg.get('custom_hooks') or []):
        raise RecipeError('EMAHook under FSDPStrategy: its averaged model would be a second, unsharded copy; '
                          'train this phase without EMA or with DDPStrategy')
    if runner_type is None or runner_type in STOCK_RUNNERS + FLEXIBLE_RUNNERS:
        return (PhaseFlexibleRunner if runner_type in FLEXIBLE_RUNNERS or kind else PhaseRunner).from_cfg(cfg)
    runner_cls = RUNNERS.get(runner_type)
    if runner_cls is None:
        raise RecipeError(f'runner_type={runner_type!r} is no registered runner (Runner, FlexibleRunner or a '
                          'class registered in mmengine.registry.RUNNERS)')
    return runner_cls.from_cfg(cfg)
