"""mmpretrain's ``ConvNeXt``: stages of ``arch['depths']`` blocks of ``arch['channels']`` widths, each stage
preceded by its downsampling layer (stage 0's is the stem).

Blocks ``backbone.stages.i.j`` (``ConvNeXtBlock``: ``x + gamma * pointwise_conv2(...)``, layer scale
``gamma`` optional); ``downsample_layers.i`` runs *before* stage ``i`` (LayerNorm, then a 2x2 stride-2
convolution from stage ``i-1``'s width to stage ``i``'s; ``downsample_layers.0`` is the 4x4 patchify stem)
and belongs with that stage's first block, so it goes with the module that takes the new width. Output
norms ``norm<i>`` (the classifier has its last stage's) go with the head; mmdet's and mmseg's ConvNeXt
configs use the same class with every stage's output normalised (``norm0``-``norm2`` are theirs alone).

Stages of different width and the meta model: a module is a contiguous run of blocks and may cross a stage
boundary; the meta model keeps one block per (module, stage) segment, so it has every stage at its own
width and every downsampling layer, and each meta block stands for the full model's blocks of its segment
at their width: a module's hybrid swaps in blocks of the same shapes. Blocks carry no position-dependent
settings (no window shifts): a meta model of one layout fits another of the same segments.
Source: ``mmpretrain/models/backbones/convnext.py`` (1.2.0).
"""
from __future__ import annotations

from mmengine.config import ConfigDict

from ..layout import BlockNaming, LayoutError, ModuleLayout
from .base import BackboneSpec, register


class ConvNeXtSpec(BackboneSpec):
    """Stage depths in ``arch['depths']``; named archs in ``ConvNeXt.arch_settings``."""

    def stage_depths(self, backbone) -> tuple[int, ...]:
        return tuple(int(depth) for depth in self.resolve_arch(backbone)['depths'])

    def set_layout(self, backbone: ConfigDict, layout: ModuleLayout, full: ModuleLayout,
                   phase_outputs: bool = False) -> None:
        """Raises:
            LayoutError: ``model.backbone.out_indices`` with negative entries for a backbone of other than
                4 stages (mmpretrain's ConvNeXt counts them from 4).
        """
        arch = self.resolve_arch(backbone)
        arch['depths'] = list(layout.stage_depths)
        backbone.arch = arch
        out_indices = backbone.get('out_indices', -1)
        out_indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
        if len(layout.stage_depths) != 4 and any(index < 0 for index in out_indices):
            raise LayoutError(f'model.backbone.out_indices {out_indices}: mmpretrain\'s ConvNeXt counts negative '
                              f'indices from 4 stages, this one has {len(layout.stage_depths)}; give them from 0')


CONVNEXT = register(ConvNeXtSpec(
    BlockNaming(
        name='convnext',
        block_key='backbone.stages.{stage}.{block}.',
        before_key='backbone.downsample_layers.{stage}.',
        stem_prefixes=(),
        tail_prefixes=('backbone.norm', 'neck.', 'head.'),
        residual_outputs=('pointwise_conv2.', ),
    ),
    classes=('mmpretrain.ConvNeXt', ),
    arch_keys=('depths', 'channels'),
    depth_key='depths',
    patch_weight='downsample_layers.0.0.weight',
    added_on_load=('norm0.', 'norm1.', 'norm2.'),
    zoo='arch_settings',
    patch_settings=('arch.channels[0]', 'stem_patch_size'),
))
