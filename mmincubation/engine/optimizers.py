"""Optimizer-wrapper constructor that leaves frozen parameters out of the optimizer."""
from __future__ import annotations

from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from torch import nn

from ..registry import OPTIM_WRAPPER_CONSTRUCTORS


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TrainableParamsOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """MMEngine's default constructor, restricted to parameters with ``requires_grad``.

    The default one hands frozen parameters to the optimizer too; in module incubation only the
    target module may be in it (its state, weight decay and LR schedule concern nobody else).
    ``paramwise_cfg`` works as usual: groups are built first, then emptied of frozen parameters.
    """

    def __call__(self, model: nn.Module) -> OptimWrapper:
        optim_wrapper = super().__call__(model)
        groups = optim_wrapper.optimizer.param_groups
        for group in groups:
            group['params'] = [param for param in group['params'] if param.requires_grad]
        groups[:] = [group for group in groups if group['params']]
        if not groups:
            raise ValueError(f'{type(model).__name__} has no trainable parameter to optimize')
        return optim_wrapper
