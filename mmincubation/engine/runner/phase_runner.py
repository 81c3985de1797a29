"""MMEngine's ``Runner`` for one phase of a pipeline, with a console log a person reads.

A pipeline runs one ``Runner`` per phase (seven in the demo). Each stock ``Runner`` prints the system
environment, the whole config and the hook table to the console, and MMEngine's optimizer constructor
(``mmengine/optim/optimizer/default_constructor.py``, ``add_params``) warns once per frozen parameter
tensor (dozens per module incubation in the demo, hundreds at ViT-H, since a hybrid freezes its meta
blocks) and logs each tensor's paramwise option. Here the environment reaches the console once per
process, the config, the hook table and the per-tensor messages only the phase's log file
(``<phase dir>/<timestamp>/<timestamp>.log``, beside the dumped config), and the console gets one summary
line for the frozen tensors and one for the paramwise options. The log file holds everything the stock
one does.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from torch import nn

#: The per-parameter messages of MMEngine's ``DefaultOptimWrapperConstructor.add_params``: a frozen tensor, and
#: a tensor's paramwise option (``paramwise_cfg``: no weight decay on norms and biases, ...).
_FROZEN = re.compile(r'^(\S+) is skipped since its requires_grad=False$')
_PARAMWISE = re.compile(r'^paramwise_options -- (\S+):(\w+=\S+)$')
#: Messages of ``Runner.__init__`` / ``Runner._log_env`` that go to the log file only (the environment once per
#: process goes to the console too).
_ENVIRONMENT = '\n' + '-' * 60 + '\nSystem environment:'
_FILE_ONLY = ('Config:\n', 'Hooks will be executed in the following order:')


class _ConsoleFilter(logging.Filter):
    """Drops the records :meth:`PhaseRunner` keeps out of the console (``_FILE_ONLY``, a repeated environment)."""

    def __init__(self, environment: bool) -> None:
        super().__init__()
        self.environment = environment

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(_ENVIRONMENT):
            return self.environment
        return not message.startswith(_FILE_ONLY)


class _ParameterCollector(logging.Filter):
    """Swallows the optimizer constructor's per-parameter messages (``_FROZEN``, ``_PARAMWISE``), keeping them."""

    def __init__(self, files: list[logging.Handler]) -> None:
        super().__init__()
        self.files = files
        self.frozen: list[str] = []
        self.options: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if found := _FROZEN.match(message):
            self.frozen.append(found.group(1))
        elif found := _PARAMWISE.match(message):
            self.options[found.group(2)] = self.options.get(found.group(2), 0) + 1
        if found:
            for handler in self.files:  # the log file still gets each message
                handler.handle(record)
        return not found


def frozen_summary(names: list[str], numel: dict[str, int]) -> str:
    """One line for the frozen parameters the optimizer leaves out.

    Args:
        names: parameter names (``backbone.layers.1.ffn.layers.1.weight``).
        numel: elements of each parameter (missing names count 0).

    Returns:
        ``optimizer: 52 frozen parameter tensors (0.41 M parameters) are not optimised: backbone.cls_token,
        backbone.layers.1, head`` (names cut after their first index, or after two parts).
    """
    groups: dict[str, None] = {}
    for name in names:
        parts = name.split('.')
        index = next((i for i, part in enumerate(parts[:-1]) if part.isdigit()), None)
        groups['.'.join(parts[:index + 1] if index is not None else parts[:2])] = None
    total = sum(numel.get(name, 0) for name in names)
    return (f'optimizer: {len(names)} frozen parameter tensors ({total / 1e6:.2f} M parameters) are not '
            f'optimised: {", ".join(groups)}')


class _PhaseConsole:
    """The console log of one phase (see the module docstring), for ``Runner`` and ``FlexibleRunner`` alike."""

    #: Whether this process has shown the environment on the console (once per pipeline command).
    _environment_shown: ClassVar[bool] = False

    def __init__(self, *args, **kwargs) -> None:
        self._console_filter = _ConsoleFilter(environment=not _PhaseConsole._environment_shown)
        _PhaseConsole._environment_shown = True
        super().__init__(*args, **kwargs)
        for handler in self._console_handlers():
            handler.removeFilter(self._console_filter)
        files = [h.baseFilename for h in self.logger.handlers if isinstance(h, logging.FileHandler)]
        if files:
            self.logger.info(f'environment, config and hooks of this phase: {files[0]}')

    def _console_handlers(self) -> Iterator[logging.Handler]:
        return (h for h in self.logger.handlers if not isinstance(h, logging.FileHandler))

    def _log_env(self, *args) -> None:  # Runner's takes env_cfg, FlexibleRunner's nothing
        # The logger exists from here on (the runner's __init__ builds it just before): keep the dumps off the
        # console until __init__ ends (the hook table is logged last there).
        for handler in self._console_handlers():
            handler.addFilter(self._console_filter)
        super()._log_env(*args)

    @contextmanager
    def _frozen_parameters_summarised(self, model: nn.Module) -> Iterator[None]:
        collector = _ParameterCollector([h for h in self.logger.handlers if isinstance(h, logging.FileHandler)])
        self.logger.addFilter(collector)
        try:
            yield
        finally:
            self.logger.removeFilter(collector)
        if collector.options:
            self.logger.info('optimizer: paramwise options ' + ', '.join(
                f'{option} on {count} tensors' for option, count in collector.options.items()))
        if collector.frozen:
            numel = {name: param.numel() for name, param in model.named_parameters()}
            self.logger.info(frozen_summary(collector.frozen, numel))


class PhaseRunner(_PhaseConsole, Runner):
    """``mmengine.runner.Runner`` whose console log is one phase's part of the pipeline's (see module docstring).

    Built like any ``Runner`` (``PhaseRunner.from_cfg(cfg)``); behaviour, checkpoints and log files are the
    stock ones.
    """

    def build_optim_wrapper(self, optim_wrapper):  # noqa: ANN001,ANN201 (MMEngine's signature)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        with self._frozen_parameters_summarised(model):
            return super().build_optim_wrapper(optim_wrapper)
