"""``i/N`` progress lines with an ETA, for the pipeline's phases and the benchmarks' runs.

The ETA is the work left times the seconds per unit of work measured on the steps run so far in this
process (steps that were skipped, already finished, do not count). Work comes in kinds that are not
comparable (a pipeline's epoch-based phases in block-epochs, iteration-based ones in block-iterations,
a benchmark's runs in runs): each kind has its own rate, and the ETA is unknown while a kind still to
run has none measured.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

#: ``(kind, amount)``: how much work one step is, in a unit of its kind; amount 0 for steps that train nothing.
Work = tuple[str, float]


def format_duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``2 h 05 min``."""
    if seconds < 90:
        return f'{seconds:.0f} s'
    minutes = round(seconds / 60)
    return f'{minutes} min' if minutes < 60 else f'{minutes // 60} h {minutes % 60:02d} min'


@dataclass
class Progress:
    """Announces step ``i`` of ``total`` and, once a step of each kind left has been timed, the ETA.

    Example::

        progress = Progress(total=len(runs))
        for index, run in enumerate(runs, 1):
            print(progress.announce(index, run.name, [('run', 1)] * (len(runs) - index + 1)))
            started = time.perf_counter()
            ...
            progress.done(('run', 1), time.perf_counter() - started)
    """

    total: int
    noun: str = ''
    #: steps run side by side (a benchmark's worker threads): the work left is shared among them.
    workers: int = 1
    _seconds: dict[str, float] = field(default_factory=dict)
    _work: dict[str, float] = field(default_factory=dict)

    def done(self, work: Work, seconds: float) -> None:
        """Count a step that ran (``seconds`` of wall time for ``work``)."""
        kind, amount = work
        if amount > 0:
            self._seconds[kind] = self._seconds.get(kind, 0.0) + seconds
            self._work[kind] = self._work.get(kind, 0.0) + amount

    def eta(self, remaining: Sequence[Work]) -> float | None:
        """Seconds the ``remaining`` work should take; None while a kind of it has no measured rate."""
        seconds = 0.0
        for kind, amount in remaining:
            if amount <= 0:
                continue
            if not self._work.get(kind):
                return None
            seconds += amount * self._seconds[kind] / self._work[kind]
        return seconds / self.workers

    def announce(self, index: int, title: str, remaining: Sequence[Work]) -> str:
        """``phase 3/8: incubate module 1 of 4 (ETA 12 min, at 15:40)``; ``remaining`` includes step ``index``."""
        eta = self.eta(remaining)
        when = ('ETA once a step of each kind has run' if eta is None else
                f'ETA {format_duration(eta)}, at {time.strftime("%H:%M", time.localtime(time.time() + eta))}')
        return f'{self.noun + " " if self.noun else ""}{index}/{self.total}: {title} ({when})'
