"""A pretrained network as the meta model inside the pipeline (``incubation.meta_from``): phases and costs."""
from __future__ import annotations

import json

import pytest
import torch
from test_pipeline import needs_data, tiny_demo_cfg

from mmincubation.checkpoint import META_KEY
from mmincubation.engine.runner import IncubationRunner
from mmincubation.engine.runner.records import load_records, method_results
from mmincubation.make_meta import pretraining_cost, read_pretrained
from tools.analysis_tools.summarize_incubation import compare


@pytest.fixture(scope='module')
def source(tmp_path_factory, data_root):
    """An 8-block E2E model of the demo's width, trained by its own pipeline (its records beside it)."""
    work_dir = tmp_path_factory.mktemp('source')
    IncubationRunner(tiny_demo_cfg(data_root, work_dir), phases=('e2e', )).train()
    return work_dir / 'e2e' / 'e2e.pth'


@needs_data
def test_meta_from_a_pretrained_model_replaces_meta_training_and_counts_its_cost_apart(source, data_root, tmp_path):
    cfg = tiny_demo_cfg(data_root, tmp_path)
    cfg.incubation.meta_from = dict(checkpoint=str(source))
    IncubationRunner(cfg, phases=('meta', 'incubate', 'assemble', 'finetune')).train()

    e2e_cost = json.loads((source.parent / 'phase_record.json').read_text())['cost']
    meta = torch.load(tmp_path / 'meta' / 'meta.pth', weights_only=True)
    pretrained = meta['meta'][META_KEY]['pretrained']
    assert pretrained['blocks'] == [0, 2, 5, 7] and pretrained['cost'] == e2e_cost
    weights = torch.load(source, weights_only=True)['state_dict']
    for k, b in enumerate([0, 2, 5, 7]):  # meta block k is the source's block b, by value
        assert torch.equal(meta['state_dict'][f'backbone.layers.{k}.attn.qkv.weight'],
                           weights[f'backbone.layers.{b}.attn.qkv.weight'])
    records = {(r['phase'], r['module']): r for r in load_records(tmp_path)}
    assert records['meta', None]['cost'] == 0 and records['meta', None]['iters'] == 0
    result = method_results(tmp_path)['incubation']
    new_cost = sum(r['cost'] for r in records.values())
    assert result['cost'] == new_cost > 0
    assert result['pretraining_cost'] == e2e_cost and result['total_cost'] == new_cost + e2e_cost
    line = compare(tmp_path)[0]
    assert f'+ pretraining {e2e_cost / 1e6:.1f} = total {(new_cost + e2e_cost) / 1e6:.1f} M block-images' in line
    # The fine-tuned model as the next source carries its whole history: this pipeline and the E2E model before.
    assert pretraining_cost(read_pretrained(tmp_path / 'finetune' / 'finetuned.pth'))['cost'] == new_cost + e2e_cost


@needs_data
def test_meta_from_with_a_head_warm_up_trains_the_made_meta_model(source, data_root, tmp_path):
    cfg = tiny_demo_cfg(data_root, tmp_path)
    cfg.incubation.meta_from = dict(checkpoint=str(source), blocks=[1, 3, 4, 6], cost=1e6,
                                    warmup=dict(train_cfg=dict(max_epochs=1)))
    IncubationRunner(cfg, phases=('meta', )).train()
    made = torch.load(next((tmp_path / 'meta').glob('pretrained_meta_*.pth')), weights_only=True)['state_dict']
    trained = torch.load(tmp_path / 'meta' / 'meta.pth', weights_only=True)
    assert trained['meta'][META_KEY]['holds'] == 'meta'
    assert not torch.equal(trained['state_dict']['head.layers.head.weight'], made['head.layers.head.weight'])
    record = load_records(tmp_path)[0]
    assert record['iters'] == 4 and record['cost'] == 4 * 64 * 4  # one epoch of 4 iterations, 64 images, 4 blocks
    assert record['pretrained']['blocks'] == [1, 3, 4, 6] and record['pretrained']['cost'] == 1e6
