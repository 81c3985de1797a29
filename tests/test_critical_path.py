"""Critical paths of the methods from their phase costs (block-images), on 1, K and 8 machines."""
import pytest

from mmincubation.critical_path import critical_path, critical_path_table, makespan
from mmincubation.phases import Phase

#: K = 4: meta 4, modules 6, 6, 6, 8 (module 3 holds the head), fine-tune 16, E2E 40; peers 36 each.
COSTS = {Phase('meta'): 4.0, **{Phase('incubate', k): c for k, c in enumerate((6.0, 6.0, 6.0, 8.0))},
         Phase('finetune'): 16.0, Phase('e2e'): 40.0, Phase('stack'): 36.0, Phase('grow'): 36.0}


def test_one_machine_runs_everything_a_method_pays_for_in_turn() -> None:
    assert critical_path(COSTS, 'incubation', 1) == dict(length=46.0, total=46.0, synchronised=1)
    assert critical_path(COSTS, 'e2e', 1)['length'] == 40.0
    assert critical_path(COSTS, 'stack', 1)['length'] == 40.0  # the meta model it shares, then its own


def test_module_jobs_share_the_machines_without_synchronising_across_jobs() -> None:
    # 4 machines: meta 4/4, one module job per machine (the longest: 8), fine-tune 16/4
    assert critical_path(COSTS, 'incubation', 4) == dict(length=1.0 + 8.0 + 4.0, total=46.0, synchronised=4)
    # 8 machines: 2 per module job; only the meta model and the fine-tune synchronise all 8
    assert critical_path(COSTS, 'incubation', 8)['length'] == pytest.approx(0.5 + 4.0 + 2.0)
    assert critical_path(COSTS, 'e2e', 8) == dict(length=5.0, total=40.0, synchronised=8)
    # 2 machines, 4 jobs: longest first, 8 + 6 on one, 6 + 6 on the other
    assert critical_path(COSTS, 'incubation', 2)['length'] == pytest.approx(2.0 + 14.0 + 8.0)
    assert makespan([6, 6, 6, 8], 2) == 14


def test_the_table_lists_each_method_with_its_paths() -> None:
    lines = critical_path_table(COSTS, 4)
    assert lines[0].split()[:2] == ['method', 'total'] and '8 machines' in lines[0]
    assert [line.split()[0] for line in lines[2:]] == ['incubation', 'e2e', 'stack', 'grow']
    with pytest.raises(ValueError, match='method must be one of'):
        critical_path(COSTS, 'lemon', 1)


def test_the_script_reads_methods_trained_in_work_dirs_of_their_own(tmp_path, capsys) -> None:
    """benchmarks/critical_path.py RUN/grown RUN/stack: one pipeline, the meta model they share counted once."""
    from benchmarks.critical_path import main
    from mmincubation.engine.runner.records import PhaseRecord, write_record
    incubation, stack = tmp_path / 'grown', tmp_path / 'stack'
    for work_dir, phases in ((incubation, [p for p in COSTS if p.spec.method == 'incubation']),
                             (stack, [Phase('meta'), Phase('stack')])):
        for phase in phases:
            folder = phase.work_dir(work_dir)
            folder.mkdir(parents=True, exist_ok=True)
            write_record(folder, PhaseRecord(phase.name, num_blocks=1, module=phase.module, cost=COSTS[phase] * 1e6))
    main([str(incubation), str(stack)])
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:] if line[0] != 'p'}
    assert rows.keys() == {'incubation', 'stack'}
    assert float(rows['incubation'][1]) == 46.0 and float(rows['stack'][1]) == 40.0
