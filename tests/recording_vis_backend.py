"""A visualizer backend that writes every scalar it receives to ``<save_dir>/recorded.jsonl`` (one line each,
appended), standing in for TensorBoard / W&B in tests of what an experiment tracker is shown."""
import json
import os

from mmengine.registry import VISBACKENDS
from mmengine.visualization.vis_backend import BaseVisBackend


@VISBACKENDS.register_module()
class RecordingVisBackend(BaseVisBackend):

    @property
    def experiment(self):
        return self

    def _init_env(self) -> None:
        os.makedirs(self._save_dir, exist_ok=True)

    def add_scalars(self, scalar_dict: dict, step: int = 0, file_path=None, **kwargs) -> None:
        self._init_env()
        with open(os.path.join(self._save_dir, 'recorded.jsonl'), 'a') as file:
            for name, value in scalar_dict.items():
                file.write(json.dumps(dict(name=name, value=float(value), step=step, pid=os.getpid())) + '\n')

    def add_scalar(self, name: str, value, step: int = 0, **kwargs) -> None:
        self.add_scalars({name: value}, step)
