"""bf16 on CPU, as far as MMEngine 0.10.7 allows: its ``AmpOptimWrapper`` refuses machines without a GPU, so the GPU
configs' ``AmpOptimWrapper(dtype='bfloat16')`` runs only there; what it does to a step, ``mmengine.runner.autocast``
in bfloat16, runs on CPU. Every phase's network (meta model, hybrid, full model) trains under it: the loss is the
fp32 loss to bf16 precision, and gradients reach exactly the parameters fp32 training reaches."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import ROOT
from mmengine.optim import AmpOptimWrapper
from mmengine.runner import autocast
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from mmincubation.engine.runner import phase_recipe

CONFIGS = ('incubate_demo_fashion_mnist.py', 'incubate_demo_fashion_mnist_swin.py')


def loss_and_gradients(model: torch.nn.Module, bf16: bool) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad()
    torch.manual_seed(1)
    inputs = torch.randn(8, 1, 28, 28)
    samples = [DataSample().set_gt_label(label % 10) for label in range(8)]
    with autocast(device_type='cpu', dtype=torch.bfloat16, enabled=bf16):
        loss = sum(model(inputs, samples, mode='loss').values())
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize('config', CONFIGS)
@pytest.mark.parametrize('phase,module', [('meta', None), ('incubate', 1), ('finetune', None)])
def test_every_phase_network_trains_under_bf16_autocast(load, one_thread, config, phase, module):
    cfg = load(ROOT / 'configs' / config)
    cfg.incubation.module_init = 'scratch'  # no meta model to grow from here
    model = MODELS.build(copy.deepcopy(phase_recipe(cfg, phase, module).model))
    model.init_weights()
    model.train()
    fp32_loss, fp32_grads = loss_and_gradients(model, bf16=False)
    bf16_loss, bf16_grads = loss_and_gradients(model, bf16=True)
    assert bf16_grads.keys() == fp32_grads.keys() and bf16_grads
    assert abs(bf16_loss - fp32_loss) <= 0.02 * abs(fp32_loss)  # bf16 keeps 8 bits of mantissa
    assert all(torch.isfinite(grad).all() for grad in bf16_grads.values())
    assert all(grad.dtype == torch.float32 for grad in bf16_grads.values())  # the parameters stay fp32


@pytest.mark.skipif(torch.cuda.is_available(), reason='the refusal is what a machine without a GPU gets')
def test_mmengines_amp_optim_wrapper_needs_a_gpu():
    """Why the CPU demos train in fp32 and this file tests autocast alone."""
    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
    with pytest.raises(AssertionError, match='only available training on gpu'):
        AmpOptimWrapper(dtype='bfloat16', optimizer=optimizer)
