from .incubation_runner import IncubationRunner
from .phase_config import PHASES, build_layout, phase_config

__all__ = ['IncubationRunner', 'PHASES', 'build_layout', 'phase_config']
