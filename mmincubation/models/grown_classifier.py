"""The full model grown from the meta model, then trained end to end: the growth peers of Deep Incubation.

``growth='stack'``: G_stack's depthwise stacking ("Stacking Your Transformers", NeurIPS 2024): the meta
model's K blocks repeated in order until the full depth, stem and tail the meta model's.
``growth='grow'``: every module grown from the meta model at once, as incubation's grown modules
(``incubation.module_init='meta'``): the first block of each (module, stage) segment is the meta model's
block there, the other blocks keep their fresh weights with the last layer of each residual branch zeroed,
so that the grown model computes exactly the meta model's function at step 0. Trained end to end after
this, it isolates what incubation's independent module jobs add.
"""
from __future__ import annotations

from mmpretrain.models import ImageClassifier

from ..backbones import spec_of
from ..layout import LayoutError, ModuleLayout, check_state_dict, grown_model, stacked_model
from ..registry import MODELS
from .incubation_classifier import read_meta_checkpoint, zero_branch_ends


@MODELS.register_module()
class GrownClassifier(ImageClassifier):
    """An ``ImageClassifier`` of the full model whose ``init_weights`` grows it from ``meta_checkpoint``.

    Args:
        module_depths: depths of the full model's modules, e.g. ``(3, 3, 3, 3)`` for ViT-B.
        growth: ``'stack'`` or ``'grow'`` (see the module docs).
        stage_depths: blocks of each stage of the full model (default: one stage).
        meta_checkpoint: the meta-pretraining product (set by the pipeline from the phase table).

    Raises:
        LayoutError: an unknown ``growth``; ``'stack'`` of a backbone of several stages or whose blocks depend
            on their place, or of a depth that is not a multiple of K; no ``meta_checkpoint`` at ``init_weights``.
    """

    GROWTHS = ('stack', 'grow')

    def __init__(self, backbone: dict, *args, module_depths: tuple[int, ...], growth: str,
                 stage_depths: tuple[int, ...] = (), meta_checkpoint: str | None = None, **kwargs) -> None:
        if growth not in self.GROWTHS:
            raise LayoutError(f'growth must be one of {self.GROWTHS}, got {growth!r}')
        spec = spec_of(backbone)
        self.full_layout = ModuleLayout(tuple(module_depths), spec.naming, tuple(stage_depths))
        if growth == 'stack' and spec.position_dependent:
            raise LayoutError(f'stacking moves meta blocks to other places; a {spec.name} block depends on its place')
        if growth == 'stack':
            stacked_model({}, self.full_layout)  # refuses a layout it cannot stack, before anything is built
        super().__init__(backbone, *args, **kwargs)
        self.position_dependent = spec.position_dependent
        self.growth = growth
        self.meta_checkpoint = meta_checkpoint

    def init_weights(self) -> None:
        if self.meta_checkpoint is None:
            raise LayoutError(f'the {self.growth} method grows the full model from the meta model: it needs a '
                              'meta_checkpoint')
        super().init_weights()
        path = self.meta_checkpoint
        meta_state = read_meta_checkpoint(path, self.full_layout, self.position_dependent)['state_dict']
        own = self.state_dict()
        if self.growth == 'stack':
            state = stacked_model(meta_state, self.full_layout)
            check_state_dict(state, own, source=f'meta checkpoint {path} stacked')
        else:
            state, identities = grown_model(meta_state, self.full_layout)
            check_state_dict({**own, **state}, own, source=f'meta checkpoint {path} grown')
            zero_branch_ends(own, identities, 'the model grown from the meta model', self.full_layout.naming.name)
        own.update(state)
        self.load_state_dict(own, strict=True)
