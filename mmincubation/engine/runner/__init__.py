from ...phases import PHASES, Phase
from .incubation_runner import IncubationRunner
from .phase_config import build_layout, phase_recipe

__all__ = ['IncubationRunner', 'PHASES', 'Phase', 'build_layout', 'phase_recipe']
