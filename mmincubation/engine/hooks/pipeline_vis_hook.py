"""One pipeline in TensorBoard, W&B and the other experiment trackers, not one run per phase from step 0."""
from __future__ import annotations

from collections.abc import Sequence

from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.visualization import LocalVisBackend

from ...registry import HOOKS


@HOOKS.register_module()
class PipelineVisHook(Hook):
    """Put a phase's scalars on its pipeline's axis: ``<label>/<tag>`` at step = training cost in block-images.

    Each stock ``Runner`` of a pipeline's phases logs ``loss`` and ``accuracy/top1`` from step 0, so a
    tracker shows seven overlapping runs. With this hook every visualizer backend except
    ``LocalVisBackend`` (the phase's own ``scalars.json``, left stock) receives ``meta model/loss``,
    ``module 1/accuracy/top1``, ... at step = the cost of the phases its method paid for before this one
    plus this phase's images seen x ``num_blocks`` (:class:`PhaseRecordHook`'s unit, the x axis of the
    accuracy-vs-cost figure). The earlier phases' cost is the planned one, counted at this phase's images
    per epoch (or iteration), so module jobs running side by side on other machines get the same axis.

    Args:
        label: the phase's name in figures (:attr:`mmincubation.phases.Phase.label`).
        num_blocks: blocks of the network this phase trains.
        earlier: ``[blocks, epochs, iterations]`` of each earlier phase, one of the last two None.
    """

    priority = 'NORMAL'

    def __init__(self, label: str, num_blocks: int, earlier: Sequence[Sequence] = ()) -> None:
        self.label = label
        self.num_blocks = num_blocks
        self.earlier = [tuple(item) for item in earlier]
        self.offset = 0
        self.images_per_iter = 0
        self.runner = None

    def before_train(self, runner) -> None:
        self.runner = runner
        self.images_per_iter = runner.train_dataloader.batch_size * get_world_size()
        images_per_epoch = len(runner.train_dataloader) * self.images_per_iter
        self.offset = sum(blocks * (epochs * images_per_epoch if epochs else iters * self.images_per_iter)
                          for blocks, epochs, iters in self.earlier)
        # The visualizer dispatches to its backends (MMEngine keeps them in ``_vis_backends``, a name -> backend
        # dict with no public iterator); wrapping each tracker's methods leaves LocalVisBackend stock.
        for backend in runner.visualizer._vis_backends.values():
            if not isinstance(backend, LocalVisBackend):
                self._wrap(backend)

    def step(self) -> int:
        """The pipeline's cost so far, in block-images."""
        return int(self.offset + self.runner.iter * self.images_per_iter * self.num_blocks)

    def _wrap(self, backend) -> None:
        add_scalar, add_scalars = backend.add_scalar, backend.add_scalars

        def scalar(name: str, value, step: int = 0, **kwargs) -> None:
            add_scalar(f'{self.label}/{name}', value, step=self.step(), **kwargs)

        def scalars(scalar_dict: dict, step: int = 0, file_path: str | None = None, **kwargs) -> None:
            add_scalars({f'{self.label}/{name}': value for name, value in scalar_dict.items()}, step=self.step(),
                        file_path=file_path, **kwargs)

        backend.add_scalar, backend.add_scalars = scalar, scalars
