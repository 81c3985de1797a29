# The phases of schedules/incubation_in1k.py (the official recipe, bfloat16) for billion-parameter ViTs
# (configs/incubate_vit_g.py, incubate_dinov2_g.py: 40 blocks of width 1408 / 1536, K=4 modules of 10), on the
# runner and strategy each phase's size asks for. A strategy changes how a phase is spread over the GPUs, not what
# it trains (tests/test_strategies.py: FSDP gives one process's weights up to float rounding):
#   meta      the stock Runner (DDP): 4 blocks, 0.10B (ViT-g) / 0.12B (DINOv2-g) parameters, as in the ViT-B/L/H
#             pipelines.
#   incubate  FlexibleRunner + DDPStrategy: a hybrid trains one module of 10 blocks (0.25B / 0.28B parameters)
#             behind 3 frozen meta blocks. Its FP32 weights, gradients and AdamW state are 16 bytes a trained
#             parameter, 4-4.5 GB, and fit every GPU whole: FSDP would save most of that at the price of gathering
#             every block's weights in the forward and again in the backward pass (1.5x DDP's traffic of one
#             gradient all-reduce), so the modules stay on DDP. On smaller GPUs,
#             `--cfg-options incubation.incubate.activation_checkpointing=blocks` recomputes a hybrid's 13 blocks.
#   finetune  FlexibleRunner + FSDPStrategy (one FSDP unit per block, full state dicts: our runner fills them in)
#   e2e       with activation_checkpointing='blocks' (every block recomputed in the backward pass, non-reentrant).
#             The full model's state is 16 bytes x 1.0-1.1B parameters = 16-18 GB on every GPU under DDP (and
#             its gradient buckets on top), a 1/8 shard of it under FSDP on the 8 reference GPUs; keeping the
#             activations of 40 blocks at 64 images of 257 tokens would take tens of GB more, recomputing them
#             keeps one block's (about a third more compute). The E2E twins (configs/e2e_vit_g.py,
#             e2e_dinov2_g.py) run the same: ./deit_adamw_bs2048_fsdp.py.
_base_ = './incubation_in1k.py'

incubation = dict(
    incubate=dict(runner_type='FlexibleRunner', strategy=dict(type='DDPStrategy')),
    finetune=dict(runner_type='FlexibleRunner', strategy=dict(type='FSDPStrategy'), activation_checkpointing='blocks'),
    e2e=dict(runner_type='FlexibleRunner', strategy=dict(type='FSDPStrategy'), activation_checkpointing='blocks'),
)
