from .export_weights_hook import ExportWeightsHook
from .phase_record_hook import PhaseRecordHook
from .random_state_hook import RandomStateHook

__all__ = ['ExportWeightsHook', 'PhaseRecordHook', 'RandomStateHook']
