# Deep Incubation of ViT-B/16 (DeiT-III, LayerScale) with the DeiT-III recipe (supplement: 83.3 top-1, DeiT-III
# alone 83.1): 4 modules of 3 blocks; recipe in configs/e2e_vit_b_deit3.py, phases in
# _base_/schedules/incubation_deit3_in1k.py.
_base_ = ['./e2e_vit_b_deit3.py', './_base_/schedules/incubation_deit3_in1k.py']
