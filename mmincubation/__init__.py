"""mmincubation: Deep Incubation for OpenMMLab."""
from . import compat  # noqa: F401  (applies this stack's fixes for today's torch first)
from .model_index import register_models

register_models()  # our config names for mmpretrain's get_model / inference_model / list_models

__version__ = '0.1.0'
