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
* the optimizer's parameter groups (weight decay, custom keys) decided on the model as built, not on FSDP's flat
  shards, which MMEngine's constructors would all take for norms and biases (:class:`PhaseFSDPStrategy`);
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
from mmengine.optim import build_optim_wrapper
from mmengine.runner import FlexibleRunner
from torch import nn

from ...compat import turn_on_activation_checkpointing
from ...registry import RUNNERS, STRATEGIES
from .fit_checks import build_on_meta
from .phase_config import BLOCKS, RecipeError, as_fp32, network_blocks
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
    """MMEngine 0.10.7's ``FSDPStrategy`` whose optimizer keeps its parameter groups and survives a resume.

    Its optimizer is built after wrapping, where MMEngine's constructors see FSDP's flat 1-D shards: with
    ``flat_decay_mult=0`` (the DeiT recipe) no weight had weight decay. Here the groups are decided on the model
    as built and handed to the wrapped parameters by name. Its ``load_optim_state_dict`` passes
    ``FSDP.optim_state_dict_to_load`` the state dict first, the order of torch 1.x: today's takes
    ``(model, optim, optim_state_dict)``, so every resume of an FSDP run failed ('unhashable type: dict'). Its
    ``optim_state_dict`` hands FSDP the optimizer *wrapper*; here FSDP gets the optimizer, and an
    ``AmpOptimWrapper``'s loss scaler is saved and restored beside it, as ``OptimWrapper.state_dict`` does.
    """

    _param_groups: list[tuple[dict, list[str]]] | None = None

    def prepare(self, model, *, optim_wrapper=None, **kwargs):  # noqa: ANN001,ANN201 (MMEngine's signature)
        self._optim_wrapper_cfg = optim_wrapper
        return super().prepare(model, optim_wrapper=optim_wrapper, **kwargs)

    def _wrap_model(self, model: nn.Module) -> nn.Module:
        # MMEngine's optimizer constructors judge each parameter by its shape and name (flat_decay_mult on 1-D
        # tensors, norm / bias / custom_keys); after wrapping they would see FSDP's flat 1-D shards and names with
        # `_fsdp_wrapped_module.`, and every weight lost its weight decay. The groups are decided here, on the model
        # as built, and given to the wrapped parameters by name in build_optim_wrapper.
        cfg = getattr(self, '_optim_wrapper_cfg', None)
        if isinstance(cfg, dict) and (cfg.get('optimizer') or 'constructor' in cfg):
            reference = copy.deepcopy(dict(cfg))
            as_fp32(reference)  # only the optimizer's groups are wanted (AMP needs a GPU)
            names = {id(param): name for name, param in model.named_parameters()}
            groups = build_optim_wrapper(model, reference).optimizer.param_groups
            self._param_groups = [({key: value for key, value in group.items() if key != 'params'},
                                   [names[id(param)] for param in group['params']]) for group in groups]
        return super()._wrap_model(model)

    def build_optim_wrapper(self, optim_wrapper, model=None):  # noqa: ANN001,ANN201 (MMEngine's signature)
        wrapper = super().build_optim_wrapper(optim_wrapper, model)
        if self._param_groups is None or not isinstance(optim_wrapper, dict):
            return wrapper
        params = {name.replace('_fsdp_wrapped_module.', ''): param for name, param in (model or self.model)
                  .named_parameters()}
        optimizer = wrapper.optimizer  # no step taken yet: its groups can be replaced
        optimizer.param_groups.clear()
        for options, names in self._param_groups:
            optimizer.add_param_group(dict(options, params=[params[name] for name in names]))
        return wrapper

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
        # no launcher is 'none', as for MMEngine's Runner: FlexibleRunner would infer one from the environment
        # (WORLD_SIZE, SLURM_NTASKS: any job step of a SLURM allocation) and start a process group for a run that
        # was not launched as one
        if kwargs.get('launcher') is None:
            kwargs['launcher'] = 'none'
        super().__init__(*args, **kwargs)
        blocks = network_blocks(self.cfg.model)
        self.model = self.strategy.build_model(self.model)  # FlexibleRunner builds it in train(); a module passes
        if self.cfg.get('activation_checkpointing'):
            names = self.cfg.activation_checkpointing
            names = [names] if isinstance(names, str) else list(names)
            turn_on_activation_checkpointing(self.model, names)
            self.logger.info(f'activation checkpointing (non-reentrant) of {len(names)} sub-modules: {names[0]}, ...')
        wrapper = getattr(self.strategy, 'model_wrapper', None) or {}
        if strategy_type(self.cfg.get('strategy')) == 'FSDPStrategy' and wrapper.get('auto_wrap_policy') is None:
            from torch.distributed.fsdp.wrap import ModuleWrapPolicy
            wrapper['auto_wrap_policy'] = ModuleWrapPolicy({type(self.model.get_submodule(name)) for name in blocks})

    def build_strategy(self, strategy=None, **kwargs):  # noqa: ANN001,ANN201 (MMEngine's signature)
        if isinstance(strategy, dict):
            strategy = fill_strategy(strategy, torch.cuda.is_available())
        return super().build_strategy(strategy, **kwargs)


def phase_runner_class(cfg: Config, what: str = 'the phase') -> type:
    """The runner class of one phase's recipe or run config: its ``runner_type`` (``Runner`` by default,
    ``FlexibleRunner`` when it names a ``strategy``; a user's own registered runner class as it is), checked before
    anything trains.

    Args:
        cfg: the phase's recipe (:func:`~.phase_config.phase_recipe`) or run config.
        what: the phase's settings in the pipeline config, for the messages (``'incubation.finetune'``).

    Raises:
        RecipeError: naming ``what``: a ``strategy`` on the stock ``Runner``; ``DeepSpeedStrategy`` (not supported
            yet); an ``EMAHook`` on the ``FlexibleRunner`` (MMEngine 0.10.7's hook fails there at the first
            checkpoint, and under FSDP its averaged model would be a second, unsharded copy); a ``runner_type`` no
            registry knows;
            ``activation_checkpointing`` naming no sub-module of the phase's network.
    """
    runner_type = cfg.get('runner_type')
    kind = strategy_type(cfg.get('strategy'))
    if runner_type in STOCK_RUNNERS and kind:
        raise RecipeError(f"{what}: runner_type={runner_type!r} with strategy={kind!r}: MMEngine's Runner has no "
                          f"strategies and would train without it; set {what}.runner_type='FlexibleRunner'")
    if kind == 'DeepSpeedStrategy':
        raise RecipeError(f'{what}: strategy=DeepSpeedStrategy is not supported yet: a phase\'s checkpoints and '
                          'product must be whole state dicts, which the pipeline gathers from FSDP\'s shards but '
                          "not from ZeRO's partitions; use strategy=dict(type='FSDPStrategy') (ZeRO-3's sharding of "
                          'parameters, gradients and optimizer states) or DDPStrategy')
    flexible = runner_type in FLEXIBLE_RUNNERS or (runner_type is None and bool(kind))
    if flexible and any(str(hook.get('type', '')).endswith('EMAHook') for hook in cfg.get('custom_hooks') or []):
        raise RecipeError(f'{what}: an EMAHook on the FlexibleRunner ({kind or "no strategy"}): MMEngine 0.10.7\'s '
                          'EMAHook fails there at the first checkpoint, and under FSDP its averaged model would be a '
                          'second, unsharded copy; train this phase on the stock Runner (no strategy, DDP through '
                          '--launcher) or without EMA')
    names = cfg.get('activation_checkpointing')
    if names and names != BLOCKS and not isinstance(names, str | list | tuple):
        raise RecipeError(f'{what}.activation_checkpointing={names!r}: give sub-module names or {BLOCKS!r}')
    if isinstance(names, str | list | tuple) and names != network_blocks(cfg.model):
        model = build_on_meta(cfg)
        missing = [name for name in ([names] if isinstance(names, str) else names)
                   if name not in dict(model.named_modules())]
        if missing:
            raise RecipeError(f'{what}.activation_checkpointing names {missing}, no sub-modules of the phase\'s '
                              f"network: name its blocks ({network_blocks(cfg.model)[0]!r}, ...) or set {BLOCKS!r}")
    if runner_type is None or runner_type in STOCK_RUNNERS + FLEXIBLE_RUNNERS:
        return PhaseFlexibleRunner if flexible else PhaseRunner
    runner_cls = RUNNERS.get(runner_type)
    if runner_cls is None:
        raise RecipeError(f'{what}: runner_type={runner_type!r} is no registered runner (Runner, FlexibleRunner or '
                          'a class registered in mmengine.registry.RUNNERS)')
    return runner_cls


def check_launch(cfg: Config, what: str = 'the phase') -> None:
    """Refuse a phase's strategy in a run without a distributed launch (``launcher='none'``): MMEngine's strategies
    need a process group, and would fail with 'Default process group has not been initialized'.

    Raises:
        RecipeError: naming ``what``'s strategy and the launch commands.
    """
    kind = strategy_type(cfg.get('strategy'))
    if kind and cfg.get('launcher', 'none') == 'none':
        raise RecipeError(f'{what}: strategy={kind!r} needs a distributed launch (a process group): '
                          'tools/dist_train.sh CONFIG GPUS ... (GPUS=1 on one GPU), torchrun ... tools/train.py CONFIG '
                          '--launcher pytorch, or tools/slurm_train.sh')


def build_phase_runner(cfg: Config, what: str = 'the phase') -> PhaseRunner | FlexibleRunner:
    """The runner of one phase's run config (:func:`phase_runner_class`), built by its ``from_cfg``."""
    return phase_runner_class(cfg, what).from_cfg(cfg)
