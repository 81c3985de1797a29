# Deep Incubation of DINOv2's ViT-g/14 on ImageNet-1K, supervised from scratch (1.14B parameters, 40 blocks of
# width 1536 with layer scale and SwiGLU FFNs), the whole pipeline from one config with the official ViT-H recipe:
# meta model (4 x 1 block, 300 epochs) -> 4 modules of 10 blocks incubated independently (100 epochs each) ->
# assembly -> fine-tune (100 epochs, drop path 0.7); the "e2e" phase is configs/e2e_dinov2_g.py. No official run.
#   python tools/train.py configs/incubate_dinov2_g.py --phase incubate --module 2  # one module, one job
# Model: _base_/models/vit-giant-p14_dinov2_in1k.py. Phases: _base_/schedules/incubation_in1k.py (bfloat16);
# runners and strategies per phase as ViT-g's: _base_/schedules/incubation_in1k_fsdp.py.
_base_ = [
    './_base_/models/vit-giant-p14_dinov2_in1k.py',
    './_base_/datasets/imagenet_bs64_deit-ra_224.py',
    './_base_/schedules/incubation_in1k_fsdp.py',
]
