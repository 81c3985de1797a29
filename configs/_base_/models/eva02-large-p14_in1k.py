# EVA-02-L/14 (ViTEVA02 arch 'l': width 1024, 24 blocks, 16 heads, SwiGLU FFN of 2730 with sub-LN) as
# mmpretrain's eva02/eva02-large-p14_in1k.py, at 224 px with drop path 0.5 (the official ViT-L runs' full
# model): the changes and why in ./eva02-base-p14_in1k.py.
_base_ = './eva02-base-p14_in1k.py'

model = dict(
    backbone=dict(arch='l', drop_path_rate=0.5),
    head=dict(in_channels=1024))
