"""Activation checkpointing in every phase: ``activation_checkpointing='blocks'`` names the blocks of the phase's own
network, and recomputing them gives the losses and gradients of a run without it while saving far fewer bytes for
the backward pass (the activation memory it exists to cut)."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import ROOT
from mmengine.runner.activation_checkpointing import wrap_forward as stock_wrap_forward
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from mmincubation.compat import turn_on_activation_checkpointing
from mmincubation.engine.runner import build_layout, phase_recipe
from mmincubation.engine.runner.phase_config import phase_layout, recipe_fingerprint

CONFIGS = ('incubate_demo_fashion_mnist.py', 'incubate_demo_fashion_mnist_swin.py')
PHASES = (('meta', None), ('incubate', 1), ('finetune', None))


def recipe_with_checkpointing(load, config: str, phase: str, module: int | None):
    cfg = load(ROOT / 'configs' / config)
    cfg.activation_checkpointing = 'blocks'
    cfg.incubation.module_init = 'scratch'  # no meta model to grow from here
    cfg.model.backbone.drop_path_rate = 0.1  # random in the forward: the recomputation must repeat it
    return cfg, phase_recipe(cfg, phase, module)


def step(model: torch.nn.Module) -> tuple[float, dict[str, torch.Tensor], int]:
    """One training loss and backward of a fixed batch: the loss, the gradients and the bytes saved for backward."""
    torch.manual_seed(1)
    inputs = torch.randn(4, 1, 28, 28)
    samples = [DataSample().set_gt_label(label) for label in (0, 3, 7, 9)]
    saved = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        losses = model(inputs, samples, mode='loss')
        loss = sum(value for value in losses.values())
    loss.backward()
    grads = {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}
    return loss.item(), grads, saved[0]


@pytest.mark.parametrize('config', CONFIGS)
@pytest.mark.parametrize('phase,module', PHASES)
def test_same_loss_and_gradients_fewer_saved_bytes(load, one_thread, config, phase, module):
    cfg, recipe = recipe_with_checkpointing(load, config, phase, module)
    names = recipe.activation_checkpointing
    assert names == phase_layout(build_layout(cfg), phase, module).block_modules()  # the layout names them too
    model = MODELS.build(copy.deepcopy(recipe.model))
    model.init_weights()
    assert all(model.get_submodule(name) in model.modules() for name in names)
    checkpointed = copy.deepcopy(model)
    turn_on_activation_checkpointing(checkpointed, names)

    loss, grads, saved = step(model)
    loss_ckpt, grads_ckpt, saved_ckpt = step(checkpointed)

    assert abs(loss - loss_ckpt) <= 1e-6
    assert grads.keys() == grads_ckpt.keys() and grads  # the same parameters get gradients
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, atol=1e-6, rtol=0, msg=name)
    # every block's inner activations are recomputed: only block inputs stay
    assert saved_ckpt < 0.35 * saved, (saved_ckpt, saved)


def test_stock_reentrant_checkpointing_loses_the_gradient_of_a_block_after_frozen_ones(load, one_thread):
    """Why compat replaces MMEngine's wrapper: its reentrant checkpoint gives no gradient to module 1's first block,
    whose input comes from frozen meta blocks; ours gives the gradient of a run without checkpointing."""
    cfg, recipe = recipe_with_checkpointing(load, CONFIGS[0], 'incubate', 1)
    model = MODELS.build(copy.deepcopy(recipe.model))
    model.init_weights()
    first = phase_layout(build_layout(cfg), 'incubate', 1).block_modules()[1]  # module 1's first block
    stock, ours = copy.deepcopy(model), copy.deepcopy(model)
    block = stock.get_submodule(first)
    with pytest.warns(UserWarning):
        block.forward = stock_wrap_forward(block.forward)
        step(stock)
    turn_on_activation_checkpointing(ours, [first])
    _, grads, _ = step(model)
    _, grads_stock, _ = step(stock)
    _, grads_ours, _ = step(ours)
    in_block = [name for name in grads if name.startswith(first + '.')]
    assert in_block and not any(name in grads_stock for name in in_block)
    assert all(torch.equal(grads_ours[name], grads[name]) for name in in_block)


def test_checkpointing_is_not_part_of_what_a_phase_trains(load):
    """Switching it on for a rerun keeps the finished phases: the recipe's fingerprint is the same."""
    cfg = load(ROOT / 'configs' / CONFIGS[0])
    plain = recipe_fingerprint(phase_recipe(cfg, 'incubate', 1))[1]
    cfg.activation_checkpointing = 'blocks'
    assert recipe_fingerprint(phase_recipe(cfg, 'incubate', 1))[1] == plain
