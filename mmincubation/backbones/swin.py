"""mmpretrain's ``SwinTransformer``: stages of ``arch['depths']`` blocks with patch merging between them.

Blocks ``backbone.stages.i.blocks.j`` (``SwinBlock``: ``x + attn.w_msa.proj(...)``, then
``x + ffn.layers[1](...)``); patch merging ``stages.i.downsample`` after stage ``i`` belongs with that
stage's last block; output norms ``norm<i>`` with the head. mmdet's and mmseg's ``SwinTransformer`` load
our products and normalise every stage's output (``norm0``-``norm2`` are theirs alone).
Source: ``mmpretrain/models/backbones/swin_transformer.py`` (1.2.0).
"""
from __future__ import annotations

import copy

from mmengine.config import ConfigDict

from ..layout import BlockNaming, LayoutError, ModuleLayout
from .base import BackboneSpec, register


class SwinSpec(BackboneSpec):
    """A Swin block shifts its attention windows when its index inside the stage is odd (unless the
    config's ``block_cfgs`` set ``shift`` for all blocks). A block of a meta model or hybrid keeps the
    shift of the full model's block it stands for (:meth:`~mmincubation.layout.ModuleLayout.origins`):
    an incubated module computes the same function in its hybrid and once assembled. So a meta model
    is tied to its layout: which full-model block each of its blocks stands for decides its shift.
    """

    position_dependent = True

    def stage_depths(self, backbone) -> tuple[int, ...]:
        return tuple(int(depth) for depth in self.resolve_arch(backbone)['depths'])

    def set_layout(self, backbone: ConfigDict, layout: ModuleLayout, full: ModuleLayout,
                   phase_outputs: bool = False) -> None:
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


SWIN = register(SwinSpec(
    BlockNaming(
        name='swin',
        block_key='backbone.stages.{stage}.blocks.{block}.',
        between_key='backbone.stages.{stage}.downsample.',
        stem_prefixes=('backbone.patch_embed.', 'backbone.absolute_pos_embed'),
        tail_prefixes=('backbone.norm', 'neck.', 'head.'),
        residual_outputs=('attn.w_msa.proj.', 'ffn.layers.1.'),
    ),
    classes=('mmpretrain.SwinTransformer', ),
    arch_keys=('embed_dims', 'depths', 'num_heads'),
    depth_key='depths',
    patch_weight='patch_embed.projection.weight',
    downstream_classes=('mmdet.SwinTransformer', 'mmseg.SwinTransformer'),
    added_on_load=('norm0.', 'norm1.', 'norm2.'),
))
