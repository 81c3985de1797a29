# The E2E schedule of schedules/deit_adamw_bs2048.py (bfloat16) on the runner and strategy of the billion-parameter
# pipelines' e2e phase (./incubation_in1k_fsdp.py: why): MMEngine's FlexibleRunner with FSDPStrategy, one FSDP unit
# per block, use_orig_params and full state dicts, every block's activations recomputed in the backward pass.
# A plain config has no phase recipe to fill these in, so it names the runner that does: mmincubation's
# PhaseFlexibleRunner (what a pipeline phase with runner_type='FlexibleRunner' runs on; MMEngine's own would
# ignore activation_checkpointing and wrap the whole model as one FSDP unit), registered by custom_imports for
# mmpretrain's tools/train.py too. The config that inherits this sets `activation_checkpointing` to its blocks'
# names, as the pipeline's activation_checkpointing='blocks' names them (backbone.layers.0 ... <depth - 1>).
_base_ = './deit_adamw_bs2048.py'

custom_imports = dict(imports=['mmincubation'], allow_failed_imports=False)
runner_type = 'mmincubation.PhaseFlexibleRunner'
strategy = dict(type='FSDPStrategy')
