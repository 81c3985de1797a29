from .export_weights_hook import ExportWeightsHook
from .finite_loss_hook import FiniteLossHook, TrainingDiverged
from .phase_record_hook import PhaseRecordHook
from .pipeline_vis_hook import PipelineVisHook
from .random_state_hook import RandomStateHook

__all__ = ['ExportWeightsHook', 'FiniteLossHook', 'PhaseRecordHook', 'PipelineVisHook', 'RandomStateHook',
           'TrainingDiverged']
