"""mmincubation: Deep Incubation for OpenMMLab."""
from . import compat  # noqa: F401  (applies this stack's fixes for today's torch first)

__version__ = '0.1.0'
