"""Data transforms of our configs (registered in the ``mmincubation`` scope: ``type='mmincubation.X'``)."""
from __future__ import annotations

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform

from ..registry import TRANSFORMS


@TRANSFORMS.register_module()
class ConvertChannels(BaseTransform):
    """Give ``results['img']`` the number of channels the model takes: 1 (grey) or 3 (BGR, as mmcv loads images).

    The stock inferencers read an image file in colour whatever the model (mmpretrain's
    ``ImageClassificationInferencer`` calls ``mmcv.imread(path)`` and drops the config's ``LoadImageFromFile``),
    so a grey model got 3 channels from a PNG and its patch embedding failed. In a test pipeline this transform
    makes any image fit: a BGR image becomes grey (``mmcv.bgr2gray``: OpenCV's 0.299 R + 0.587 G + 0.114 B)
    for ``channels=1``, a grey one BGR (the value repeated) for ``channels=3``. An image that already has
    ``channels`` (grey ones as ``(H, W)`` or ``(H, W, 1)``) is passed on as it is: the data set's own images,
    and what is evaluated on them, do not change.

    Args:
        channels: 1 or 3.

    Shapes: ``img`` ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` in; out unchanged when it has ``channels``, else
    ``(H, W)`` (grey) or ``(H, W, 3)``; any dtype OpenCV converts (uint8, float32).

    Raises:
        ValueError: ``channels`` other than 1 or 3; an image of another shape (named), e.g. 4 channels (RGBA).
    """

    def __init__(self, channels: int) -> None:
        if channels not in (1, 3):
            raise ValueError(f'ConvertChannels: channels must be 1 (grey) or 3 (BGR), got {channels!r}')
        self.channels = channels

    def transform(self, results: dict) -> dict:
        img: np.ndarray = results['img']
        have = 1 if img.ndim == 2 else img.shape[2] if img.ndim == 3 else None
        if have not in (1, 3):
            raise ValueError(f'ConvertChannels: expected an image of shape (H, W), (H, W, 1) or (H, W, 3), '
                             f'got {img.shape}')
        if have != self.channels:
            grey = img if img.ndim == 2 else img[..., 0]
            results['img'] = mmcv.bgr2gray(img) if self.channels == 1 else mmcv.gray2bgr(grey)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(channels={self.channels})'
