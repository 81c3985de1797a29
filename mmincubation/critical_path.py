"""The critical path of each method: the longest chain of dependent work, with the work spread over machines.

What only incubation has is independence: its K module jobs read the meta model and nothing else, need no
communication with each other, and each holds one module's hybrid. Given each phase's cost (block-images, as
the phase records count it), this says how long each method's chain of dependent phases is on ``M`` machines
and how many machines must synchronise at every step of its widest phase:

* a phase that is one job (meta model, fine-tune, E2E, the peers) is spread over all ``M`` machines with ideal
  data parallelism: ``cost / M``, and all ``M`` machines synchronise each step (an all-reduce);
* the K module jobs share the ``M`` machines: with ``M >= K`` each gets ``M / K`` of them (``max_k cost_k K / M``,
  ``M / K`` machines synchronising); with fewer machines than jobs each job runs on one machine and the jobs
  are packed longest first (the makespan of that schedule), and no two machines synchronise.

Under ideal data parallelism two methods of equal cost have equal critical paths: incubation is not faster
on paper. Its gains are what this model leaves out: the all-reduce of ``M`` machines at every step, and the
memory of the whole model on each of them (``benchmarks/step_cost.py`` measures the hybrids' peaks). The
table says so rather than inventing a communication cost.
"""
from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

from .phases import METHODS, PHASE_TABLE, Phase


def makespan(costs: Sequence[float], machines: int) -> float:
    """Length of the longest-first schedule of independent one-machine jobs on ``machines`` machines."""
    loads = [0.0] * max(1, machines)
    for cost in sorted(costs, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + cost)
    return max(loads)


def critical_path(costs: Mapping[Phase, float], method: str, machines: int) -> dict:
    """The chain of ``method``'s phases (in pipeline order, each waiting for the one before) on ``machines``.

    Args:
        costs: each phase's cost in block-images (phases the method does not pay for are ignored).
        method: a key of :data:`~mmincubation.phases.METHODS`.
        machines: how many machines share the work.

    Returns:
        ``dict(length=..., total=..., synchronised=...)``: the chain's length in block-images per machine, the
        method's total cost, and how many machines synchronise at each step of its widest phase.

    Raises:
        ValueError: an unknown method or fewer than one machine.
    """
    if method not in METHODS:
        raise ValueError(f'method must be one of {list(METHODS)}, got {method!r}')
    if machines < 1:
        raise ValueError(f'machines must be at least 1, got {machines}')
    length = total = 0.0
    synchronised = 1
    for name, spec in PHASE_TABLE.items():
        if method not in spec.counted_by or not spec.trains:
            continue
        jobs = [cost for phase, cost in costs.items() if phase.name == name]
        if not jobs:
            continue
        total += sum(jobs)
        if not spec.per_module:
            length += jobs[0] / machines
            synchronised = max(synchronised, machines)
        elif machines >= len(jobs):
            share = machines / len(jobs)
            length += max(jobs) / share
            synchronised = max(synchronised, int(share))
        else:
            length += makespan(jobs, machines)
    return dict(length=length, total=total, synchronised=synchronised)


def methods_in(costs: Mapping[Phase, float]) -> list[str]:
    """The methods whose result phase has a cost: a method of which only the meta model it shares was trained is
    not one that ran."""
    return [method for method, result in METHODS.items() if any(phase.name == result for phase in costs)]


def critical_path_table(costs: Mapping[Phase, float], num_modules: int,
                        machine_counts: Sequence[int] | None = None) -> list[str]:
    """Lines of a table: per method with costs, its total and its critical path on 1, K and 8 machines."""
    machine_counts = list(machine_counts or sorted({1, num_modules, 8}))
    methods = methods_in(costs)
    header = f'{"method":<12}{"total":>10}' + ''.join(f'{f"{m} machines":>22}' for m in machine_counts)
    lines = [header, f'{"":<12}{"(M blk-img)":>10}' + ''.join(f'{"path (sync)":>22}' for _ in machine_counts)]
    for method in methods:
        cells = [critical_path(costs, method, m) for m in machine_counts]
        row = f'{method:<12}{cells[0]["total"] / 1e6:>10.2f}'
        row += ''.join(f'{cell["length"] / 1e6:>16.2f} ({cell["synchronised"]:>2})' for cell in cells)
        lines.append(row)
    return lines
