"""Backbone specs: everything Deep Incubation knows of one block-sequential backbone, in one place.

A spec, looked up by the **exact** class of ``model.backbone.type`` (a subclass is not served by its
parent's spec: it may name or compute its blocks differently, as mmpretrain's ``ViTEVA02`` does), knows:

* the state-dict naming (:class:`~mmincubation.layout.BlockNaming`): where the stem, the blocks, the
  between-stage layers and the tail live, and which layers of a block end its residual branches (zeroed,
  they turn a grown module's extra blocks into the identity);
* the stage depths of a config (named archs through the class's own ``arch_zoo``, as mmpretrain's
  backbones own theirs) and how to write a meta model's or hybrid's depths back;
* what a loader adds, drops or resizes (the fit checks read it), and the patch embedding's key;
* whether a block's settings depend on its place in the full model.

Every other module (layout, hybrid, make_meta, fit checks, converters, export) reads a spec; a new
backbone is one file in this package that calls :func:`register`. Which parameter is stem, block or tail
agrees with the backbone's own ``get_layer_depth`` where it has one (tested); it is not derived from it
because ``get_layer_depth`` files parameters it does not know (DeiT's ``dist_token``, ``pre_norm``,
Swin's ``absolute_pos_embed``) with the head, silently.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

from mmengine.config import ConfigDict
from mmpretrain.registry import MODELS

from ..layout import BlockNaming, LayoutError, ModuleLayout


class BackboneSpec:
    """A one-stage backbone whose ``arch[depth_key]`` blocks all look alike (the ViT); the base of the others.

    Args:
        naming: the state-dict naming of an ``ImageClassifier`` with this backbone.
        classes: registry names of the exact classes served (``'mmpretrain.VisionTransformer'``).
        arch_keys: keys an explicit ``arch`` dict must have.
        depth_key: the ``arch`` key holding the depth (an int for one stage, a list per stage).
        patch_weight: backbone-relative key of the patch embedding's convolution weight,
            ``(width, input channels, patch height, patch width)``, if the backbone has one.
        patch_settings: the ``model.backbone`` settings giving that weight's width and patch size, named when
            a checkpoint's differ (a ViT's ``arch.embed_dims`` and ``patch_size``).
        resized_on_load: backbone-relative keys the backbone resizes itself when loading a checkpoint
            (a ViT interpolates its position embedding to the configured input size).
        downstream_classes: registry names of the detection / segmentation versions of the backbone
            (mmdet's, mmseg's) that load this backbone's products, and ``added_on_load``: the
            backbone-relative key prefixes they have and a classifier's does not.
        unused_on_load: backbone-relative key prefixes a classifier's backbone has and a downstream one of its
            class may lack, leaving them unused on load (the norm of a mean-pooled classifier's pooled feature,
            ``ln2``, in a backbone that returns feature maps).
        zoo: the class attribute holding its named archs (mmpretrain's ``arch_zoo``; ConvNeXt's
            ``arch_settings``).
        widen: ``widen(state_dict, factor)``, the classifier's state dict made ``factor`` times wider with the
            same function (a pretrained network grown into a wider meta model), if the backbone can be widened.
    """

    #: Whether a block's settings depend on its place in the full model (then a meta model fits only the
    #: layout it was trained for); a ViT's blocks are all alike.
    position_dependent = False

    def __init__(self, naming: BlockNaming, classes: tuple[str, ...], arch_keys: tuple[str, ...], depth_key: str,
                 patch_weight: str | None = None, resized_on_load: tuple[str, ...] = (),
                 downstream_classes: tuple[str, ...] = (), added_on_load: tuple[str, ...] = (),
                 unused_on_load: tuple[str, ...] = (), zoo: str = 'arch_zoo',
                 patch_settings: tuple[str, str] = ('arch.embed_dims', 'patch_size'),
                 widen: Callable[[Mapping, int], dict] | None = None) -> None:
        self.naming = naming
        self.classes = classes
        self.arch_keys = arch_keys
        self.depth_key = depth_key
        self.patch_weight = patch_weight
        self.patch_settings = patch_settings
        self.resized_on_load = resized_on_load
        self.downstream_classes = downstream_classes
        self.added_on_load = added_on_load
        self.unused_on_load = unused_on_load
        self.zoo = zoo
        self.widen = widen

    @property
    def name(self) -> str:
        """The backbone kind a checkpoint's tag records (``'vit'``, ``'swin'``)."""
        return self.naming.name

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.name!r})'

    def resolve_arch(self, backbone: Mapping) -> dict:
        """The backbone's ``arch`` as an explicit dict, named archs looked up in the class's zoo (``arch_zoo``).

        Raises:
            LayoutError: naming ``model.backbone.arch`` when the name is unknown or a key is missing.
        """
        arch = backbone.get('arch', 'base')
        if isinstance(arch, str):
            zoo = getattr(_backbone_class(backbone), self.zoo, {})
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

    def set_layout(self, backbone: ConfigDict, layout: ModuleLayout, full: ModuleLayout,
                   phase_outputs: bool = False) -> None:
        """Give the backbone config the depths of ``layout`` (``full`` itself, its meta model or a hybrid).

        ``phase_outputs``: the phase's own section sets ``out_indices`` (they then count the phase network's
        blocks); else they are the full model's, and only ``-1``, the last block, is the same block in a meta
        model or hybrid.

        Raises:
            LayoutError: ``model.backbone.out_indices`` name blocks the smaller network does not have, or
                full-model blocks that are other blocks in it.
        """
        arch = self.resolve_arch(backbone)
        arch[self.depth_key] = layout.total_depth
        backbone.arch = arch
        out_indices = backbone.get('out_indices', -1)
        out_indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
        moved = [i for i in out_indices if i != -1] if layout != full and not phase_outputs else []
        if moved:
            raise LayoutError(f'model.backbone.out_indices {out_indices} name blocks {moved} of the full model '
                              f'({full.total_depth} blocks); in a network of {layout.total_depth} blocks (layout '
                              f'{layout.depths}) those indices are other blocks: use -1 (the last block, the same '
                              'in every phase) or set out_indices for this phase in `incubation` (e.g. '
                              'incubation.meta.model.backbone.out_indices)')
        beyond = [i for i in out_indices if not -layout.total_depth <= i < layout.total_depth]
        if beyond:
            raise LayoutError(f'model.backbone.out_indices {out_indices} name blocks {beyond} that a network of '
                              f'{layout.total_depth} blocks (layout {layout.depths}) does not have')


#: Specs by backbone kind (the tag's ``backbone`` field), in the order they were registered.
SPECS: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    """Make ``spec`` the one for its kind and classes.

    Raises:
        ValueError: another spec already has the kind or one of the classes.
    """
    if spec.name in SPECS:
        raise ValueError(f'a backbone spec for {spec.name!r} is already registered: {SPECS[spec.name]!r}')
    for other in SPECS.values():
        shared = set(spec.classes) & set(other.classes)
        if shared:
            raise ValueError(f'classes {sorted(shared)} are already served by {other!r}')
    SPECS[spec.name] = spec
    return spec


def spec_named(name: str) -> BackboneSpec:
    """The spec of a backbone kind, as a checkpoint's tag records it.

    Raises:
        LayoutError: no spec has that kind.
    """
    if name not in SPECS:
        raise LayoutError(f'unknown backbone kind {name!r}; known: {sorted(SPECS)}')
    return SPECS[name]


def _class_of(name: str) -> type | None:
    """The class a registry name (``'mmpretrain.VisionTransformer'``, ``'mmdet.SwinTransformer'``) builds;
    None when its package is not installed."""
    try:
        return MODELS.get(name)
    except (ImportError, KeyError):
        return None


def _backbone_class(backbone: Mapping) -> type:
    backbone_type = backbone.get('type')
    backbone_cls = MODELS.get(backbone_type) if isinstance(backbone_type, str) else backbone_type
    if not isinstance(backbone_cls, type):
        raise LayoutError(f'model.backbone.type={backbone_type!r} is not a registered backbone class')
    return backbone_cls


def _spec_serving(backbone_cls: type, downstream: bool) -> BackboneSpec | None:
    for spec in SPECS.values():
        names = spec.classes + (spec.downstream_classes if downstream else ())
        if any(_class_of(name) is backbone_cls for name in names):
            return spec
    return None


def spec_of(backbone: Mapping) -> BackboneSpec:
    """The spec of a backbone config's exact class (``model.backbone.type``).

    Raises:
        LayoutError: naming the class, and where a spec goes, when no spec serves it (a subclass of a
            served class included: its state dict or blocks may differ from its parent's).
    """
    backbone_cls = _backbone_class(backbone)
    spec = _spec_serving(backbone_cls, downstream=False)
    if spec is None:
        served = sorted(name for spec in SPECS.values() for name in spec.classes)
        raise LayoutError(
            f'model.backbone.type={backbone.get("type")!r} ({backbone_cls.__module__}.{backbone_cls.__qualname__}) '
            f'has no backbone spec; Deep Incubation serves exactly {served}. A subclass is not served by its '
            "parent's spec: add its registry name to that spec's classes (mmincubation/backbones/<kind>.py) if its "
            'state dict and blocks are the parent\'s, else write a spec file for it there; from your own project, '
            'call mmincubation.backbones.register(BackboneSpec(...)) in a module your config\'s custom_imports '
            'names')
    return spec


def loading_spec(backbone_cls: type) -> BackboneSpec | None:
    """The spec of a built backbone that loads our products (a classifier's backbone or mmdet's / mmseg's
    version of it), else None: then nothing is added, dropped or resized on load."""
    return _spec_serving(backbone_cls, downstream=True)


def stage_depths_of(backbone: Mapping) -> tuple[int, ...]:
    """Blocks of each stage of the configured backbone."""
    return spec_of(backbone).stage_depths(backbone)


def resolve_arch(backbone: Mapping) -> dict:
    """The backbone config's ``arch`` as an explicit dict (see :meth:`BackboneSpec.resolve_arch`)."""
    return spec_of(backbone).resolve_arch(backbone)
