"""Parameters and FLOPs of the networks a pipeline trains, from its config alone (no training, no checkpoint).

Each phase's network is built as the phase builds it: its recipe
(:func:`~mmincubation.engine.runner.phase_config.phase_recipe`; the assembly's is the fine-tune's, the model
:meth:`IncubationRunner.assemble <mmincubation.engine.runner.IncubationRunner.assemble>` fits the modules into),
``model`` built in the config's default scope on the CPU, untrained. A hybrid is the
:class:`~mmincubation.models.IncubationClassifier` the incubate phase trains, everything but its target module
frozen, so its trainable parameters are the module's.

FLOPs are MMEngine's count (``mmengine.analysis.get_model_complexity_info``): multiply-adds of one image through the
whole classifier (backbone, neck and head; ``mode='tensor'``, no data preprocessor), counting Linear layers,
convolutions, matrix products (torch's fused attention too, :func:`mmincubation.compat.count_fused_attention_flops`)
and 5 per element of an affine norm, not softmax, activations or additions. The paper's FLOPs are multiply-adds
too (DeiT-T-32 on 32x32 CIFAR images: 1.0 G, this count 0.98 G).
"""
from __future__ import annotations

import argparse
import gc
import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from mmengine.analysis import get_model_complexity_info
from mmengine.analysis.print_helper import _format_size
from mmengine.config import Config, DictAction
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS

from .checkpoint import check_config_file
from .engine.runner.phase_config import build_layout, phase_layout, phase_recipe
from .layout import ModuleLayout
from .phases import DEFAULT_METHODS, Phase, all_phases

#: What each kind of network a phase trains is called (``PhaseSpec.checkpoint_holds``, else ``holds``).
NETWORKS = {'meta': 'meta model', 'hybrid': 'hybrid', 'full': 'full model'}


def input_shape(cfg: Config, size: Sequence[int] | None = None) -> tuple[int, int, int]:
    """``(channels, height, width)`` of one image of ``cfg.model``'s backbone.

    Channels: ``model.backbone.in_channels``; size: ``size`` (``(H, W)`` or ``(S, )`` for a square), else
    ``model.backbone.img_size`` (an int or ``(H, W)``); a setting the config leaves out is the backbone class's
    default (mmpretrain's ViT and Swin: 3 channels, 224). The demo configs give ``(1, 28, 28)``.

    Raises:
        ValueError: naming ``model.backbone`` when neither the config nor the class's signature has the setting,
            or ``size`` is not one or two positive numbers.
    """
    backbone = cfg.model.backbone
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmpretrain')):
        backbone_cls = MODELS.get(backbone.type)
    # a subclass may pass a setting on to its parent through **kwargs (ViTEVA02's in_channels): the first class
    # of its MRO that names the setting gives the default
    signatures = [inspect.signature(cls.__init__).parameters for cls in backbone_cls.__mro__ if '__init__' in vars(cls)]

    def setting(name: str) -> object:
        if name in backbone:
            return backbone[name]
        for parameters in signatures:
            if name in parameters and parameters[name].default is not inspect.Parameter.empty:
                return parameters[name].default
        how = '--shape H [W]' if name == 'img_size' else f'model.backbone.{name}'
        raise ValueError(f'model.backbone ({backbone.type}) has no {name} setting and its class no default: give '
                         f'{how} (channels and size of the input images)')

    if size is None:
        image_size = setting('img_size')
        size = (image_size, ) if isinstance(image_size, int) else tuple(image_size)
    if len(size) not in (1, 2) or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f'the image size must be one or two positive whole numbers (H [W]), got {list(size)}')
    height, width = (size[0], size[0]) if len(size) == 1 else size
    return int(setting('in_channels')), height, width


def build_model(recipe: Config) -> torch.nn.Module:
    """``recipe.model`` built on the CPU in the recipe's default scope (as MMEngine's runner builds it), in eval mode
    (drop path and dropout off), not initialised: counts do not depend on the weights.

    Not on the meta device (as :func:`~mmincubation.engine.runner.fit_checks.build_on_meta`): torch's tracer, which
    the FLOP count runs, cannot run convolutions there, and Swin's index buffers must hold real values.
    """
    with DefaultScope.overwrite_default_scope(recipe.get('default_scope', 'mmpretrain')):
        return MODELS.build(recipe.model).eval()


@dataclass(frozen=True)
class Complexity:
    """What one network costs: its parameters (all, and those that train), its multiply-adds for one image
    (:mod:`mmincubation.complexity`), and the parameters of each of its modules (``layout.module_of``)."""

    params: int
    trainable: int
    flops: int
    module_params: tuple[int, ...]


def model_complexity(model: torch.nn.Module, layout: ModuleLayout, shape: tuple[int, int, int]) -> Complexity:
    """MMEngine's complexity of ``model`` (a classifier whose parameters ``layout`` assigns to modules) for one
    image of ``shape`` ``(C, H, W)``."""
    info = get_model_complexity_info(model, input_shape=shape, show_table=False, show_arch=False)
    module_params = [0] * layout.num_modules
    for name, param in model.named_parameters():
        module_params[layout.module_of(name)] += param.numel()
    trainable = sum(param.numel() for param in model.parameters() if param.requires_grad)
    return Complexity(info['params'], trainable, info['flops'], tuple(module_params))


@dataclass(frozen=True)
class PhaseComplexity:
    """One phase's network (``layout``: its module depths) and what it costs."""

    phase: Phase
    layout: ModuleLayout
    cost: Complexity

    @property
    def network(self) -> str:
        """``'meta model'``, ``'hybrid'`` or ``'full model'``."""
        return NETWORKS[self.phase.spec.checkpoint_holds or self.phase.spec.holds]


def phase_complexity(cfg: Config, size: Sequence[int] | None = None) -> list[PhaseComplexity]:
    """The network of every phase of the pipeline ``cfg`` runs (its ``incubation.methods``' phases, in order), each
    built from its recipe and counted for one image (:func:`input_shape` of ``cfg``, ``size`` if given).

    A model config met before (the assembly's is the fine-tune's) is counted once; any difference, even in drop
    path only, builds the network again. Each network is freed before the next is built, so only the largest is
    ever in memory (ViT-H: about 2.5 GB).

    Raises:
        LayoutError: the config's layout does not fit its backbone (:func:`build_layout`).
        ValueError: no input shape (:func:`input_shape`).
    """
    layout = build_layout(cfg)
    shape = input_shape(cfg, size)
    counted: dict[str, Complexity] = {}
    rows = []
    for phase in all_phases(layout.num_modules, (cfg.get('incubation') or {}).get('methods', DEFAULT_METHODS)):
        recipe = phase_recipe(cfg, 'finetune' if phase.name == 'assemble' else phase.name, phase.module)
        network = phase_layout(layout, phase.name, phase.module)
        key = json.dumps(recipe.model.to_dict(), sort_keys=True, default=repr)
        if key not in counted:
            model = build_model(recipe)
            counted[key] = model_complexity(model, network, shape)
            del model
            gc.collect()
        rows.append(PhaseComplexity(phase, network, counted[key]))
    return rows


def format_complexity(rows: Sequence[PhaseComplexity], shape: tuple[int, int, int]) -> list[str]:
    """The table of :func:`phase_complexity`: phase, network, module depths, blocks, parameters, trainable
    parameters (``-`` for the assembly, which trains nothing), FLOPs and FLOPs relative to the full model (the
    fine-tune's); then each module's parameters in the full model and their sum."""
    full = next(row for row in rows if row.phase.name == 'finetune')
    lines = [f'input {"x".join(map(str, shape))}, one image; FLOPs: multiply-adds through the whole classifier '
             "(MMEngine's count)",
             f'{"phase":<20}{"network":<12}{"modules":<18}{"blocks":>7}{"params":>12}{"trainable":>12}'
             f'{"FLOPs":>12}{"of full":>9}']
    for row in rows:
        trainable = _format_size(row.cost.trainable) if row.phase.spec.trains else '-'
        lines.append(f'{str(row.phase):<20}{row.network:<12}{"+".join(map(str, row.layout.depths)):<18}'
                     f'{row.layout.total_depth:>7}{_format_size(row.cost.params):>12}{trainable:>12}'
                     f'{_format_size(row.cost.flops):>12}{row.cost.flops / full.cost.flops:>9.3f}')
    modules = full.cost.module_params
    lines.append('parameters of each module in the full model: '
                 + ', '.join(f'{module}: {_format_size(count)}' for module, count in enumerate(modules))
                 + f'; together {_format_size(sum(modules))} of {_format_size(full.cost.params)}')
    return lines


def add_input_arguments(parser: argparse.ArgumentParser, config_help: str) -> None:
    """The config, ``--shape`` and ``--cfg-options`` arguments of the complexity tools."""
    parser.add_argument('config', help=config_help)
    parser.add_argument('--shape', type=int, nargs='+',
                        help='input image size, H [W] (default: model.backbone.img_size)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')


def config_and_shape(args: argparse.Namespace) -> tuple[Config, tuple[int, int, int]]:
    """The config the arguments of :func:`add_input_arguments` name (its options merged) and its input shape.

    Raises:
        SystemExit: naming the setting when the input shape cannot be read from the config.
    """
    cfg = Config.fromfile(str(check_config_file(args.config)))
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        return cfg, input_shape(cfg, args.shape)
    except ValueError as error:
        raise SystemExit(f'error: {error}') from error
