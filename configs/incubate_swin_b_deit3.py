# Deep Incubation of Swin-B with the DeiT-III recipe (supplement: 83.8 top-1, against 83.5 for Swin-B's own
# recipe and 82.2 for plain DeiT-III): the module split of configs/incubate_swin_b.py (4 x 6 blocks), recipe
# in configs/e2e_swin_b_deit3.py, phases in _base_/schedules/incubation_deit3_in1k.py.
_base_ = ['./e2e_swin_b_deit3.py', './_base_/schedules/incubation_deit3_in1k.py']
