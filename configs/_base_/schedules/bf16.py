# bfloat16 mixed precision, the optim_wrapper setting of every phase of the GPU configs (ImageNet pipelines, their
# E2E baselines, CIFAR-100): MMEngine's AmpOptimWrapper runs the forward and backward pass under torch.autocast in
# bfloat16 and keeps the weights, gradients and optimizer state in FP32. Merged over a schedule's optim_wrapper, it
# keeps the optimizer, paramwise_cfg and accumulative_counts as they are.
# The official Deep Incubation runs trained in FP32 (their engine.py, use_amp=0), and so did the runs behind the
# paper's numbers; to train as they did:
#   python tools/train.py CONFIG --cfg-options optim_wrapper.type=OptimWrapper
# (our tools/train.py then drops dtype and loss_scale, which only AmpOptimWrapper takes).
# AmpOptimWrapper refuses CPUs (MMEngine 0.10.7), so the CPU demos (incubate_demo_fashion_mnist*.py, benchmarks/)
# stay FP32: they never inherit this file.
# A named setting, not an `optim_wrapper` of its own: a config whose optim_wrapper comes from an mmpretrain config
# cannot take it from a second base too (MMEngine refuses a key in two sibling bases), so each schedule merges it:
#   optim_wrapper = dict(_base_.bf16_optim_wrapper, optimizer=...)   or   optim_wrapper = _base_.bf16_optim_wrapper
bf16_optim_wrapper = dict(type='AmpOptimWrapper', dtype='bfloat16')
