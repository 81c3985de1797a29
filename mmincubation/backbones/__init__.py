"""Backbone specs, one file per backbone (see :mod:`.base`); importing this package registers them all."""
from .base import SPECS, BackboneSpec, loading_spec, register, resolve_arch, spec_named, spec_of, stage_depths_of
from .convnext import CONVNEXT
from .eva02 import EVA02
from .swin import SWIN
from .vit import VIT

__all__ = ['CONVNEXT', 'EVA02', 'SPECS', 'SWIN', 'VIT', 'BackboneSpec', 'loading_spec', 'register', 'resolve_arch',
           'spec_named', 'spec_of', 'stage_depths_of']
