"""The hybrid network of module incubation, as an mmpretrain ``ImageClassifier``."""
from __future__ import annotations

from mmpretrain.models import ImageClassifier

from ..backbones import spec_of
from ..checkpoint import CheckpointError, check_finite, incubation_meta, load_weights
from ..layout import LayoutError, ModuleLayout, check_state_dict, convert_state_dict, grown_module, layout_from_tag
from ..registry import MODELS


@MODELS.register_module()
class IncubationClassifier(ImageClassifier):
    """Meta model whose ``target_module``-th block is the real module, which alone is trained.

    The backbone must have the hybrid's depth (``K - 1`` meta blocks plus the target's blocks).
    Every parameter outside the target module is frozen at construction, so optimizers, DDP and
    gradient clipping only ever see the target. Freezing the meta modules *after* the target too
    (the official code keeps them trainable but out of the optimizer) changes neither the update nor
    the target's gradient, which still flows back through their activations; it only skips
    computing weight gradients that nobody uses, and leaves DDP without unused parameters.

    Args:
        module_depths: depths of the full model's modules, e.g. ``(3, 3, 3, 3)`` for ViT-B.
        stage_depths: blocks of each stage of the full model (default: one stage), e.g. ``(2, 2, 18, 2)``
            for Swin-B.
        target_module: index of the module being incubated.
        meta_checkpoint: output of the meta-pretraining phase; its modules fill the non-target slots
            in :meth:`init_weights`.
        module_init: how the target starts. ``'scratch'`` (the paper, Sec. 3.2): its own fresh
            initialisation. ``'meta'`` (ours, beyond the paper): grown from the meta model: its first
            block in each stage is the meta model's block there, module 0 / K-1 take the meta stem /
            final norm and head, between-stage layers their meta ones, and its other blocks keep
            their fresh weights with the last layer of each residual branch zeroed, so each is the
            identity. The hybrid then computes exactly the meta model's function at step 0, and so
            does the assembly of such modules.
    """

    MODULE_INITS = ('scratch', 'meta')

    def __init__(self, backbone: dict, *args, module_depths: tuple[int, ...], target_module: int,
                 stage_depths: tuple[int, ...] = (), meta_checkpoint: str | None = None,
                 module_init: str = 'scratch', **kwargs) -> None:
        if module_init not in self.MODULE_INITS:
            raise LayoutError(f'incubation.module_init must be one of {self.MODULE_INITS}, got {module_init!r}')
        spec = spec_of(backbone)
        full_layout = ModuleLayout(tuple(module_depths), spec.naming, tuple(stage_depths))
        layout = full_layout.hybrid(target_module)
        built = spec.stage_depths(backbone)
        if built != layout.stage_depths:
            raise LayoutError(f'the backbone has stages of {list(built)} blocks but the hybrid for module '
                              f'{target_module} of layout {full_layout.depths} (stages '
                              f'{list(full_layout.stage_depths)}) needs {list(layout.stage_depths)}')
        super().__init__(backbone, *args, **kwargs)
        self.full_layout, self.layout = full_layout, layout
        self.position_dependent = spec.position_dependent
        self.module_init = module_init
        self.target_module = target_module
        self.meta_checkpoint = meta_checkpoint
        for name, param in self.named_parameters():
            param.requires_grad_(self.layout.module_of(name) == target_module)

    def init_weights(self) -> None:
        if self.module_init == 'meta' and self.meta_checkpoint is None:
            raise LayoutError("incubation.module_init='meta' grows the module from the meta model: "
                              'it needs a meta_checkpoint')
        super().init_weights()
        if self.meta_checkpoint is not None:
            self.load_meta_modules(self.meta_checkpoint)

    def load_meta_modules(self, path: str) -> None:
        """Copy every module but the target from a meta-pretraining checkpoint (with
        ``module_init='meta'``, the target's meta block, stem or tail too, see the class docs)."""
        checkpoint = read_meta_checkpoint(path, self.full_layout, self.position_dependent)
        others = [m for m in range(self.layout.num_modules) if m != self.target_module]
        own = self.state_dict()
        expected = {key: value for key, value in own.items() if self.layout.module_of(key) != self.target_module}
        try:
            meta_weights = convert_state_dict(
                checkpoint['state_dict'], self.full_layout.meta(), self.layout, others)
        except (KeyError, LayoutError) as error:
            raise CheckpointError(f'meta checkpoint {path} does not fit layout '
                                  f'{self.full_layout.meta().depths}: {error}') from error
        check_state_dict(meta_weights, expected, source=f'meta checkpoint {path}')
        own.update(meta_weights)
        if self.module_init == 'meta':
            grown, identities = grown_module(checkpoint['state_dict'], self.full_layout, self.target_module)
            own.update(grown)
            zero_branch_ends(own, identities, f'module {self.target_module} grown from the meta model: its hybrid',
                             self.full_layout.naming.name)
        self.load_state_dict(own, strict=True)

    def export_module(self, state_dict: dict | None = None) -> dict:
        """The target module's weights, keyed as in the full model, from the hybrid's ``state_dict`` (default: its
        own; under FSDP the one gathered from the shards)."""
        state = {key: value.detach().cpu() for key, value in (state_dict or self.state_dict()).items()}
        return convert_state_dict(state, self.layout, self.full_layout, [self.target_module])


def read_meta_checkpoint(path: str, full: ModuleLayout, position_dependent: bool) -> dict:
    """A meta-pretraining product, loaded safely and checked against the full model's layout.

    Raises:
        CheckpointError: naming ``path``: not a meta model, NaN / Inf, another backbone kind or number of
            modules, or (``position_dependent`` backbones, whose meta blocks are set up for the place they
            stand for) another layout.
    """
    checkpoint = load_weights(path)
    recorded = layout_from_tag(incubation_meta(checkpoint, path, phase='meta').to_dict())
    check_finite(checkpoint['state_dict'], f'meta checkpoint {path}')
    if recorded.naming != full.naming:
        raise CheckpointError(f'meta checkpoint {path} is a meta model of a {recorded.naming.name} backbone, '
                              f'the config has a {full.naming.name} backbone')
    if recorded.num_modules != full.num_modules:
        raise CheckpointError(f'meta checkpoint {path} has {recorded.num_modules} modules, '
                              f'the config asks for {full.num_modules}')
    if position_dependent and recorded != full:
        raise CheckpointError(f'meta checkpoint {path} was trained for layout {recorded.depths} (stages '
                              f'{recorded.stage_depths}), the config asks for {full.depths} (stages '
                              f'{full.stage_depths}): a {recorded.naming.name} meta block is set up '
                              'for the place in the full model it stands for')
    return checkpoint


def zero_branch_ends(state: dict, identities: list[tuple[str, ...]], what: str, kind: str) -> None:
    """Zero, in place, the tensors under each entry of ``identities`` (the end of one residual branch of a new
    block, :func:`~mmincubation.layout.grown_module`), so that every new block is the identity.

    Raises:
        LayoutError: an entry matches no tensor of ``state`` (the ``kind`` spec's residual outputs do not fit).
    """
    for branch in identities:
        ends = [key for key in state if key.startswith(branch)]
        if not ends:
            raise LayoutError(f'{what} has no {" or ".join(branch)}* tensors, the end of a residual branch by the '
                              f'{kind} backbone spec (mmincubation/backbones); its new blocks would not be the '
                              'identity')
        state.update({key: state[key].new_zeros(state[key].shape) for key in ends})
