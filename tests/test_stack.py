"""The pinned OpenMMLab stack is really usable in one process on CPU (issue: Foundation)."""
import warnings

import pytest
import torch
from conftest import det_sample_64
from mmengine.hub import get_config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmengine.structures import PixelData

import mmincubation  # noqa: F401  (applies the compatibility fixes)


def test_mmcv_compiled_ops_give_known_results():
    from mmcv.ops import RoIAlign, nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]

    feature = torch.arange(16.).reshape(1, 1, 4, 4)
    roi_align = RoIAlign(output_size=(2, 2), spatial_scale=1.0, sampling_ratio=1, aligned=True)
    # The whole 4x4 map as one RoI: each output bin samples its centre, the mean of a 2x2 block.
    pooled = roi_align(feature, torch.tensor([[0., 0., 0., 4., 4.]]))
    expected = torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]])
    torch.testing.assert_close(pooled, expected)


def _tiny_vit(**kwargs) -> dict:
    arch = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)
    return dict(type='mmpretrain.VisionTransformer', arch=arch, patch_size=16, **kwargs)


def _assert_backbone_receives_gradients(model: torch.nn.Module, losses: dict) -> None:
    total = sum(v for k, v in losses.items() if 'loss' in k and isinstance(v, torch.Tensor))
    assert torch.isfinite(total)
    total.backward()
    backbone_grads = [p.grad for n, p in model.named_parameters() if n.startswith('backbone.')]
    assert backbone_grads and all(g is not None for g in backbone_grads)
    assert any(g.abs().sum() > 0 for g in backbone_grads)


def test_mmpretrain_vit_classifier_from_config_trains():
    cfg = get_config('mmpretrain::vision_transformer/vit-base-p16_64xb64_in1k.py')
    cfg.model.backbone = _tiny_vit(img_size=32, drop_path_rate=0.1)
    # The stock head is zero-initialised (no gradient would reach the backbone in one step).
    cfg.model.head.update(in_channels=32, num_classes=5, hidden_dim=None,
                          init_cfg=dict(type='TruncNormal', layer='Linear', std=.02))
    init_default_scope('mmpretrain')
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    model = MODELS.build(cfg.model)
    model.init_weights()
    samples = [DataSample().set_gt_label(i) for i in range(2)]
    losses = model(torch.randn(2, 3, 32, 32), samples, mode='loss')
    _assert_backbone_receives_gradients(model, losses)


def test_mmdet_mask_rcnn_with_mmpretrain_vit_backbone_trains():
    from mmdet.registry import MODELS
    cfg = get_config('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')
    cfg.model.backbone = _tiny_vit(img_size=64, out_type='featmap')
    cfg.model.neck = dict(type='FPN', in_channels=[32], out_channels=32, num_outs=2)
    cfg.model.rpn_head.update(in_channels=32, feat_channels=32)
    cfg.model.rpn_head.anchor_generator.strides = [16, 32]
    for roi in ('bbox_roi_extractor', 'mask_roi_extractor'):
        cfg.model.roi_head[roi].update(out_channels=32, featmap_strides=[16, 32])
    cfg.model.roi_head.bbox_head.update(in_channels=32, fc_out_channels=64, num_classes=3)
    cfg.model.roi_head.mask_head.update(in_channels=32, conv_out_channels=32, num_classes=3)
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    model.init_weights()
    sample = det_sample_64()
    losses = model(torch.randn(1, 3, 64, 64), [sample], mode='loss')
    assert {'loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'} <= set(losses)
    summed = {k: sum(v) if isinstance(v, list) else v for k, v in losses.items()}
    _assert_backbone_receives_gradients(model, summed)


def test_mmseg_upernet_with_mmpretrain_vit_backbone_trains():
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    cfg = get_config('mmseg::_base_/models/upernet_vit-b16_ln_mln.py')
    cfg.model.pretrained = None  # must stay None with an mmpretrain backbone (it is an mmseg-only field)
    cfg.model.backbone = _tiny_vit(img_size=64, out_type='featmap', out_indices=(0, 1))
    cfg.model.neck.update(in_channels=[32, 32], out_channels=32, scales=[2, 1])
    cfg.model.decode_head.update(in_channels=[32, 32], in_index=[0, 1], channels=32, num_classes=4,
                                 norm_cfg=dict(type='BN', requires_grad=True))
    cfg.model.auxiliary_head.update(in_channels=32, in_index=1, channels=16, num_classes=4,
                                    norm_cfg=dict(type='BN', requires_grad=True))
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    model.init_weights()
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64), ori_shape=(64, 64)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 4, (1, 64, 64)))
        samples.append(sample)
    losses = model(torch.randn(2, 3, 64, 64), samples, mode='loss')
    assert {'decode.loss_ce', 'aux.loss_ce'} <= set(losses)
    _assert_backbone_receives_gradients(model, losses)



def _runner(work_dir, max_epochs: int, resume: bool) -> Runner:
    from mmengine.model import BaseModel

    class Linear(BaseModel):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, inputs, labels, mode='loss'):
            return {'loss': torch.nn.functional.cross_entropy(self.fc(inputs), labels)}

    torch.manual_seed(0)
    dataset = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32, )))
    return Runner(
        model=Linear(), work_dir=str(work_dir), resume=resume,
        train_dataloader=dict(dataset=dataset, batch_size=8, collate_fn=dict(type='default_collate'),
                              sampler=dict(type='DefaultSampler', shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-2)),
        param_scheduler=dict(type='CosineAnnealingLR', T_max=max_epochs, by_epoch=True),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        default_scope='mmengine')


def test_runner_checkpoint_resumes_with_safe_loading(tmp_path):
    first = _runner(tmp_path, max_epochs=1, resume=False)
    first.train()
    saved = first.model.fc.weight.detach().clone()
    resumed = _runner(tmp_path, max_epochs=2, resume=True)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no unsafe-loading (or any other) warning on resume
        resumed.train()
    assert resumed.iter == 8 and resumed.epoch == 2  # 4 iterations per epoch, continued from epoch 1
    assert not torch.equal(resumed.model.fc.weight, saved)  # it trained on after loading
    # The checkpoint itself loads with torch's safe unpickler.
    checkpoint = torch.load(tmp_path / 'epoch_1.pth', weights_only=True)
    torch.testing.assert_close(checkpoint['state_dict']['fc.weight'], saved)
    assert checkpoint['message_hub']['log_scalars']['train/loss'].current() > 0


def test_safe_loading_refuses_arbitrary_getattr(tmp_path):
    import pickle

    from mmengine.logging import HistoryBuffer

    class Evil:
        def __reduce__(self):
            return getattr, (HistoryBuffer, '__init__')

    path = tmp_path / 'evil.pth'
    torch.save({'x': Evil()}, path)
    with pytest.raises(pickle.UnpicklingError, match='only HistoryBuffer statistics'):
        torch.load(path, weights_only=True)
