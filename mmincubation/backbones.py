"""Backbone adapters: what Deep Incubation needs to know of a block-sequential backbone's config.

An adapter, found from the config's ``model.backbone.type`` (its class or any base class), knows
the backbone's state-dict naming (:class:`~mmincubation.layout.BlockNaming`), how to read the
stage depths from a config (named archs through the class's own ``arch_zoo``) and how to write the
depths of a meta model or hybrid back. Supported: mmpretrain's ``VisionTransformer`` and its
subclasses (DeiT, DeiT-III, ours) and ``SwinTransformer``.

Which parameter is stem, block or tail agrees with the backbone's own ``get_layer_depth`` (tested);
it is not derived from it because ``get_layer_depth`` files parameters it does not know (DeiT's
``dist_token``, ``pre_norm``, Swin's ``absolute_pos_embed``) with the head, silently.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping

from mmengine.config import ConfigDict
from mmpretrain.registry import MODELS

from .layout import SWIN_NAMING, VIT_NAMING, BlockNaming, LayoutError, ModuleLayout


class BackboneAdapter:
    """The ViT adapter: one stage of ``arch['num_layers']`` blocks; the base of the others.

    Args:
        naming: the backbone's state-dict naming.
        arch_keys: keys an explicit ``arch`` dict must have.
        depth_key: the ``arch`` key holding the depth (an int for one stage, a list per stage).
    """

    #: Whether a block's settings depend on its place in the full model (then a meta model fits only the
    #: layout it was trained for); a ViT's blocks are all alike.
    position_dependent = False

    def __init__(self, naming: BlockNaming, arch_keys: tuple[str, ...], depth_key: str) -> None:
        self.naming = naming
        self.arch_keys = arch_keys
        self.depth_key = depth_key

    def resolve_arch(self, backbone: Mapping) -> dict:
        """The backbone's ``arch`` as an explicit dict, named archs looked up in the class's ``arch_zoo``.

        Raises:
            LayoutError: naming ``model.backbone.arch`` when the name is unknown or a key is missing.
        """
        arch = backbone.get('arch', 'base')
        if isinstance(arch, str):
            zoo = getattr(MODELS.get(backbone['type']), 'arch_zoo', {})
            if arch.lower() not in zoo:
                raise LayoutError(f'model.backbone.arch {arch!r} is not one of {backbone["type"]}\'s archs '
                                  f'{sorted(zoo)}')
            arch = zoo[arch.lower()]
        arch = copy.deepcopy(dict(arch))
        missing = [key for key in self.arch_keys if key not in arch]
        if missing:
            raise LayoutError(f'model.backbone.arch lacks {missing}; expected a name or a dict with {self.arch_keys}')
        return arch

    def stage_depths(self, backbone: Mapping) -> tuple[int, ...]:
        """Blocks of each stage of the configured backbone."""
        return (int(self.resolve_arch(backbone)[self.depth_key]), )

    def set_layout(self, backbone: ConfigDict, layout: ModuleLayout, full: ModuleLayout) -> None:
        """Give the backbone config the depths of ``layout`` (``full`` itself, its meta model or a hybrid).

        Raises:
            LayoutError: ``model.backbone.out_indices`` name blocks the smaller network does not have.
        """
        arch = self.resolve_arch(backbone)
        arch[self.depth_key] = layout.total_depth
        backbone.arch = arch
        out_indices = backbone.get('out_indices', -1)
        out_indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
        beyond = [i for i in out_indices if not -layout.total_depth <= i < layout.total_depth]
        if beyond:
            raise LayoutError(f'model.backbone.out_indices {out_indices} name blocks {beyond} that a network of '
                              f'{layout.total_depth} blocks (layout {layout.depths}) does not have; give the output '
                              'blocks counted from the end (e.g. -1) or set out_indices per phase in `incubation`')


class SwinAdapter(BackboneAdapter):
    """mmpretrain's ``SwinTransformer``: stages of ``arch['depths']`` blocks.

    A Swin block shifts its attention windows when its index inside the stage is odd (unless the
    config's ``block_cfgs`` set ``shift`` for all blocks). A block of a meta model or hybrid keeps the
    shift of the full model's block it stands for (:meth:`~mmincubation.layout.ModuleLayout.origins`):
    an incubated module computes the same function in its hybrid and once assembled. So a meta model
    is tied to its layout: which full-model block each of its blocks stands for decides its shift.
    """

    position_dependent = True

    def __init__(self) -> None:
        super().__init__(SWIN_NAMING, ('embed_dims', 'depths', 'num_heads'), 'depths')

    def stage_depths(self, backbone: Mapping) -> tuple[int, ...]:
        return tuple(int(depth) for depth in self.resolve_arch(backbone)['depths'])

    def set_layout(self, backbone: ConfigDict, layout: ModuleLayout, full: ModuleLayout) -> None:
        arch = self.resolve_arch(backbone)
        arch['depths'] = list(layout.stage_depths)
        backbone.arch = arch
        if layout == full:
            return
        stage_cfgs = backbone.get('stage_cfgs', {})
        if not isinstance(stage_cfgs, (list, tuple)):
            stage_cfgs = [copy.deepcopy(stage_cfgs) for _ in layout.stage_depths]
        origins = layout.origins(full)
        for stage, stage_cfg in enumerate(stage_cfgs):
            extra = stage_cfg.get('block_cfgs', {})
            if isinstance(extra, (list, tuple)):
                raise LayoutError('model.backbone.stage_cfgs[*].block_cfgs given per block cannot follow the '
                                  'blocks of a meta model or hybrid; give one dict for all blocks')
            first = layout.global_block(stage, 0)
            stage_cfg['block_cfgs'] = [
                dict(copy.deepcopy(dict(extra)),
                     shift=extra.get('shift', full.stage_of(origins[first + index])[1] % 2 == 1))
                for index in range(layout.stage_depths[stage])]
        backbone.stage_cfgs = stage_cfgs


VIT_ADAPTER = BackboneAdapter(VIT_NAMING, ('embed_dims', 'num_layers', 'num_heads', 'feedforward_channels'),
                              'num_layers')

#: Adapters by the mmpretrain class name they serve (their subclasses included).
ADAPTERS = {'VisionTransformer': VIT_ADAPTER, 'SwinTransformer': SwinAdapter()}


def backbone_adapter(backbone: Mapping) -> BackboneAdapter:
    """The adapter of a backbone config's ``type``.

    Raises:
        LayoutError: naming ``model.backbone.type`` when no adapter serves it.
    """
    backbone_type = backbone.get('type')
    backbone_cls = MODELS.get(backbone_type) if isinstance(backbone_type, str) else backbone_type
    for cls in getattr(backbone_cls, '__mro__', ()):
        if cls.__name__ in ADAPTERS:
            return ADAPTERS[cls.__name__]
    raise LayoutError(f'model.backbone.type={backbone_type!r}: Deep Incubation supports the backbones '
                      f'{sorted(ADAPTERS)} (and their subclasses)')


def stage_depths_of(backbone: Mapping) -> tuple[int, ...]:
    """Blocks of each stage of the configured backbone."""
    return backbone_adapter(backbone).stage_depths(backbone)


def resolve_arch(backbone: Mapping) -> dict:
    """The backbone config's ``arch`` as an explicit dict (see :meth:`BackboneAdapter.resolve_arch`)."""
    return backbone_adapter(backbone).resolve_arch(backbone)
