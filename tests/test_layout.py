"""Module layouts map blocks and state-dict keys to modules and re-key exactly between layouts."""
from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mmincubation  # noqa: F401  (applies the compatibility fixes)
from mmincubation.backbones import VIT
from mmincubation.layout import (
    STEM,
    TAIL,
    LayoutError,
    ModuleLayout,
    check_state_dict,
    convert_state_dict,
)

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True)

depths_strategy = st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=6).map(tuple)


@st.composite
def layout_and_module(draw: st.DrawFn) -> tuple[ModuleLayout, int]:
    layout = ModuleLayout(draw(depths_strategy), VIT.naming)
    return layout, draw(st.integers(min_value=0, max_value=layout.num_modules - 1))


STEM_KEYS = ('backbone.patch_embed.projection.weight', 'backbone.patch_embed.projection.bias',
             'backbone.cls_token', 'backbone.pos_embed')
TAIL_KEYS = ('backbone.ln1.weight', 'backbone.ln1.bias', 'head.layers.head.weight', 'head.layers.head.bias')
BLOCK_RESTS = ('ln1.weight', 'attn.qkv.weight', 'attn.proj.weight', 'ffn.layers.0.0.weight', 'ffn.layers.1.weight')
# Keys of the other parts that mmpretrain may produce, also assigned by prefix.
EXTRA_STEM_KEYS = ('backbone.dist_token', 'backbone.pre_norm.weight')
EXTRA_TAIL_KEYS = ('backbone.ln2.weight', 'neck.fc.weight')


def synthetic_state_dict(layout: ModuleLayout, start: int = 0) -> dict[str, torch.Tensor]:
    """A full-model state dict in mmpretrain ViT naming, every value a distinct tensor."""
    keys = list(STEM_KEYS)
    keys += [f'backbone.layers.{block}.{rest}' for block in range(layout.total_depth) for rest in BLOCK_RESTS]
    keys += list(TAIL_KEYS)
    return {key: torch.full((1, ), float(start + n)) for n, key in enumerate(keys)}


def assert_same_entries(actual: dict, expected: dict) -> None:
    """Same keys, and every value the very same tensor object (nothing copied or swapped)."""
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert actual[key] is value, key


# --- 1. Properties of layouts ------------------------------------------------------------------


@PROPERTY
@given(depths_strategy)
def test_locate_first_block_and_blocks_of_are_consistent_bijections(depths: tuple[int, ...]) -> None:
    layout = ModuleLayout(depths, VIT.naming)
    assert layout.depths == depths
    assert layout.num_modules == len(depths)
    assert layout.total_depth == sum(depths)

    # The blocks of the modules tile 0..total_depth-1 in order, without gaps or overlap.
    tiled = [block for module in range(layout.num_modules) for block in layout.blocks_of(module)]
    assert tiled == list(range(layout.total_depth))

    pairs = set()
    for block in range(layout.total_depth):
        module, local = layout.locate(block)
        assert 0 <= module < layout.num_modules
        assert 0 <= local < depths[module]
        assert layout.first_block(module) + local == block
        assert block in layout.blocks_of(module)
        pairs.add((module, local))
    # locate is onto every (module, local) pair, hence a bijection.
    assert pairs == {(m, i) for m, d in enumerate(depths) for i in range(d)}

    for module, depth in enumerate(depths):
        assert layout.first_block(module) == sum(depths[:module])
        assert len(layout.blocks_of(module)) == depth
        for local, block in enumerate(layout.blocks_of(module)):
            assert layout.locate(block) == (module, local)


@PROPERTY
@given(depths_strategy)
def test_module_of_agrees_with_locate_and_sends_stem_first_tail_last(depths: tuple[int, ...]) -> None:
    layout = ModuleLayout(depths, VIT.naming)
    for block in range(layout.total_depth):
        for rest in BLOCK_RESTS + ('ln2.bias', 'attn.qkv.bias'):
            assert layout.module_of(f'backbone.layers.{block}.{rest}') == layout.locate(block)[0]
    for key in STEM_KEYS + EXTRA_STEM_KEYS:
        assert layout.module_of(key) == 0, key
        assert VIT.naming.outer_part(key) == STEM
    for key in TAIL_KEYS + EXTRA_TAIL_KEYS:
        assert layout.module_of(key) == layout.num_modules - 1, key
        assert VIT.naming.outer_part(key) == TAIL
    # A block beyond the layout belongs to no module.
    with pytest.raises(LayoutError, match=f'block {layout.total_depth} is out of range'):
        layout.module_of(f'backbone.layers.{layout.total_depth}.ln1.weight')


@PROPERTY
@given(layout_and_module())
def test_meta_and_hybrid_depths(case: tuple[ModuleLayout, int]) -> None:
    layout, target = case
    assert layout.meta().depths == (1, ) * layout.num_modules
    hybrid = layout.hybrid(target)
    assert hybrid.num_modules == layout.num_modules
    assert hybrid.depths[target] == layout.depths[target]
    assert all(d == 1 for m, d in enumerate(hybrid.depths) if m != target)
    assert hybrid.naming is layout.naming


def test_naming_split_join_round_trip() -> None:
    assert VIT.naming.split('backbone.layers.11.attn.qkv.weight') == (0, 11, 'attn.qkv.weight')
    assert VIT.naming.join(0, 11, 'attn.qkv.weight') == 'backbone.layers.11.attn.qkv.weight'
    assert VIT.naming.split('backbone.ln1.weight') is None
    # 'backbone.layers' without an index is not a block key (and belongs to no part).
    assert VIT.naming.split('backbone.layers.x.weight') is None


def test_uniform_split() -> None:
    assert ModuleLayout.uniform(12, 4, VIT.naming).depths == (3, 3, 3, 3)
    assert ModuleLayout.uniform(12, 1, VIT.naming).depths == (12, )
    assert ModuleLayout.uniform(12, 4, VIT.naming).hybrid(1).depths == (1, 3, 1, 1)


# --- 2. Exact round-trips on synthetic state dicts ----------------------------------------------


@PROPERTY
@given(layout_and_module())
def test_full_to_hybrid_to_full_gives_back_exactly_that_module(case: tuple[ModuleLayout, int]) -> None:
    full, target = case
    hybrid = full.hybrid(target)
    state = synthetic_state_dict(full)

    in_hybrid = convert_state_dict(state, full, hybrid, [target])
    # Every converted key is a key of the hybrid and belongs to the target module there.
    hybrid_keys = set(synthetic_state_dict(hybrid))
    assert set(in_hybrid) <= hybrid_keys
    assert all(hybrid.module_of(key) == target for key in in_hybrid)

    back = convert_state_dict(in_hybrid, hybrid, full, [target])
    expected = {key: value for key, value in state.items() if full.module_of(key) == target}
    assert expected
    assert_same_entries(back, expected)


@PROPERTY
@given(depths_strategy)
def test_union_of_modules_exported_from_separate_hybrids_is_the_full_model(depths: tuple[int, ...]) -> None:
    full = ModuleLayout(depths, VIT.naming)
    state = synthetic_state_dict(full)
    assembled = {}
    for target in range(full.num_modules):
        hybrid = full.hybrid(target)
        # Each hybrid holds a different (trained) copy of everything: only module `target` is exported.
        hybrid_state = convert_state_dict(state, full, hybrid, [target])
        hybrid_state.update({key: torch.full((1, ), -1.0) for key in synthetic_state_dict(hybrid)
                             if key not in hybrid_state})
        exported = convert_state_dict(hybrid_state, hybrid, full, [target])
        assert not set(exported) & set(assembled), 'two hybrids export the same key'
        assembled.update(exported)
    assert_same_entries(assembled, state)
    assert all(torch.equal(assembled[key], state[key]) for key in state)


@PROPERTY
@given(layout_and_module())
def test_meta_to_hybrid_puts_meta_block_j_at_module_j(case: tuple[ModuleLayout, int]) -> None:
    full, target = case
    meta, hybrid = full.meta(), full.hybrid(target)
    meta_state = synthetic_state_dict(meta, start=1000)
    others = [m for m in range(full.num_modules) if m != target]

    initialised = convert_state_dict(meta_state, meta, hybrid, others)

    expected = {}
    for key, value in meta_state.items():
        split = VIT.naming.split(key)
        if split is None:
            part = VIT.naming.outer_part(key)
            owner = 0 if part == STEM else full.num_modules - 1
            if owner != target:
                expected[key] = value
        elif split.index != target:
            # Meta block j is module j; in the hybrid it sits where module j starts.
            expected[VIT.naming.join(0, hybrid.first_block(split.index), split.rest)] = value
    assert_same_entries(initialised, expected)
    for module in others:
        block = hybrid.first_block(module)
        assert initialised[f'backbone.layers.{block}.attn.qkv.weight'] is \
            meta_state[f'backbone.layers.{module}.attn.qkv.weight']
    # Nothing of the target module comes from the meta model.
    assert all(hybrid.module_of(key) != target for key in initialised)
    # Together with the full model's target module, the hybrid is complete.
    full_part = convert_state_dict(synthetic_state_dict(full), full, hybrid, [target])
    assert sorted({**initialised, **full_part}) == sorted(synthetic_state_dict(hybrid))


@PROPERTY
@given(depths_strategy)
def test_converting_all_modules_between_identical_layouts_is_the_identity(depths: tuple[int, ...]) -> None:
    layout = ModuleLayout(depths, VIT.naming)
    state = synthetic_state_dict(layout)
    converted = convert_state_dict(state, layout, ModuleLayout(depths, VIT.naming))
    assert_same_entries(converted, state)
    assert list(converted) == list(state)
    assert_same_entries(convert_state_dict(state, layout, layout, range(layout.num_modules)), state)


def test_convert_with_no_modules_gives_nothing() -> None:
    layout = ModuleLayout((2, 3), VIT.naming)
    assert convert_state_dict(synthetic_state_dict(layout), layout, layout, []) == {}


def test_convert_concrete_example() -> None:
    full = ModuleLayout((2, 3, 1), VIT.naming)  # blocks 0-1 | 2-4 | 5
    hybrid = full.hybrid(1)  # (1, 3, 1): blocks 0 | 1-3 | 4
    state = {'backbone.layers.1.ln1.weight': 'z', 'backbone.layers.2.ln1.weight': 'a',
             'backbone.layers.4.ln1.weight': 'b', 'backbone.layers.5.ln1.weight': 'c',
             'backbone.cls_token': 'd', 'head.layers.head.weight': 'e'}
    assert convert_state_dict(state, full, hybrid, [1]) == {
        'backbone.layers.1.ln1.weight': 'a', 'backbone.layers.3.ln1.weight': 'b'}
    assert convert_state_dict(state, full, hybrid, [1, 2]) == {
        'backbone.layers.1.ln1.weight': 'a', 'backbone.layers.3.ln1.weight': 'b',
        'backbone.layers.4.ln1.weight': 'c', 'head.layers.head.weight': 'e'}


# --- 3. A real mmpretrain model -------------------------------------------------------------------


def build_vit(num_layers: int) -> torch.nn.Module:
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    from mmpretrain.registry import MODELS
    return MODELS.build(
        dict(type='ImageClassifier',
             backbone=dict(type='VisionTransformer',
                           arch=dict(embed_dims=16, num_layers=num_layers, num_heads=2, feedforward_channels=32),
                           img_size=16, patch_size=8),
             neck=None,
             head=dict(type='VisionTransformerClsHead', num_classes=3, in_channels=16)))


@pytest.fixture(scope='module')
def real_full_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_vit(6).eval()


def test_every_key_of_a_real_vit_is_assigned_to_the_right_module(real_full_model: torch.nn.Module) -> None:
    layout = ModuleLayout((2, 2, 2), VIT.naming)
    keys = list(real_full_model.state_dict())
    assigned = {key: layout.module_of(key) for key in keys}  # no KeyError for any key

    for key, module in assigned.items():
        if key.startswith(('backbone.patch_embed.', 'backbone.cls_token', 'backbone.pos_embed')):
            assert module == 0, key
        elif key.startswith(('backbone.ln1.', 'head.')):
            assert module == 2, key
        else:
            block = int(re.fullmatch(r'backbone\.layers\.(\d+)\..+', key).group(1))
            assert module == block // 2, key
    # All the parts the rules talk about really exist in the model.
    assert any(k.startswith('backbone.patch_embed.') for k in keys)
    assert {'backbone.cls_token', 'backbone.pos_embed'} <= set(keys)
    assert any(k.startswith('backbone.ln1.') for k in keys)
    assert any(k.startswith('head.') for k in keys)
    assert {layout.locate(b)[0] for b in range(6)} == {0, 1, 2}
    assert sorted(set(assigned.values())) == [0, 1, 2]


@pytest.mark.parametrize('target', [0, 1, 2])
def test_real_state_dict_loads_into_a_real_hybrid_model(real_full_model: torch.nn.Module, target: int) -> None:
    full = ModuleLayout((2, 2, 2), VIT.naming)
    hybrid = full.hybrid(target)
    full_state = real_full_model.state_dict()
    converted = convert_state_dict(full_state, full, hybrid, [target])

    model = build_vit(hybrid.total_depth)
    reference = model.state_dict()
    result = model.load_state_dict(converted, strict=False)

    assert result.unexpected_keys == []
    expected_missing = {key for key in reference if hybrid.module_of(key) != target}
    assert set(result.missing_keys) == expected_missing
    assert expected_missing  # the other modules really are left out
    # What was loaded is the full model's module, at the hybrid's place.
    loaded = model.state_dict()
    for key, value in converted.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)
    # Shapes fit the hybrid model.
    check_state_dict({**reference, **converted}, reference, 'converted module')


def test_real_modules_from_hybrids_assemble_into_the_same_model(real_full_model: torch.nn.Module) -> None:
    full = ModuleLayout((2, 2, 2), VIT.naming)
    full_state = real_full_model.state_dict()
    assembled = {}
    for target in range(full.num_modules):
        hybrid = full.hybrid(target)
        hybrid_model = build_vit(hybrid.total_depth)
        hybrid_model.load_state_dict(convert_state_dict(full_state, full, hybrid, [target]), strict=False)
        assembled.update(convert_state_dict(hybrid_model.state_dict(), hybrid, full, [target]))

    check_state_dict(assembled, full_state, 'assembled model')
    model = build_vit(6).eval()
    model.load_state_dict(assembled, strict=True)
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(images, mode='tensor'), real_full_model(images, mode='tensor'),
                                   rtol=0, atol=0)


# --- 4. Errors say what is wrong -------------------------------------------------------------------


def test_uniform_that_does_not_divide_names_both_numbers() -> None:
    with pytest.raises(LayoutError, match=r'12 blocks cannot be split into 5 equal modules'):
        ModuleLayout.uniform(12, 5, VIT.naming)
    with pytest.raises(LayoutError, match=r'into 0 equal modules'):
        ModuleLayout.uniform(12, 0, VIT.naming)


@pytest.mark.parametrize('depths', [(), (0, ), (3, 0, 3), (2, -1)])
def test_depths_must_be_non_empty_and_positive(depths: tuple[int, ...]) -> None:
    with pytest.raises(LayoutError, match='non-empty list of positive ints'):
        ModuleLayout(depths, VIT.naming)


@pytest.mark.parametrize('module', [4, -1, 10])
def test_module_index_out_of_range_is_named(module: int) -> None:
    layout = ModuleLayout((3, 3, 3, 3), VIT.naming)
    for call in (layout.hybrid, layout.first_block, layout.blocks_of):
        with pytest.raises(LayoutError, match=rf'module index {module} is out of range for 4 modules'):
            call(module)


@pytest.mark.parametrize('block', [-1, 6, 100])
def test_locate_out_of_range_is_named(block: int) -> None:
    with pytest.raises(LayoutError, match=rf'block {block} is out of range for layout \(2, 4\) \(6 blocks\)'):
        ModuleLayout((2, 4), VIT.naming).locate(block)


def test_converting_between_different_module_counts_fails() -> None:
    with pytest.raises(LayoutError, match=r'cannot map 3 modules .*\(2, 2, 2\).* onto 2 modules .*\(3, 3\)'):
        convert_state_dict({}, ModuleLayout((2, 2, 2), VIT.naming), ModuleLayout((3, 3), VIT.naming))


def test_converting_a_module_of_another_depth_names_the_module() -> None:
    full, hybrid = ModuleLayout((2, 3, 2), VIT.naming), ModuleLayout((1, 3, 1), VIT.naming)
    state = synthetic_state_dict(full)
    with pytest.raises(LayoutError, match=r'module 2 has 2 blocks in layout \(2, 3, 2\) but 1 in layout \(1, 3, 1\)'):
        convert_state_dict(state, full, hybrid, [1, 2])
    with pytest.raises(LayoutError, match=r'module 0 has 2 blocks'):
        convert_state_dict(state, full, hybrid)  # all modules
    # The module of equal depth alone converts fine.
    assert convert_state_dict(state, full, hybrid, [1])


def test_converting_a_module_out_of_range_fails() -> None:
    layout = ModuleLayout((2, 2), VIT.naming)
    with pytest.raises(LayoutError, match='module index 2 is out of range'):
        convert_state_dict({}, layout, layout, [2])


def test_unknown_key_raises_key_error_naming_it() -> None:
    layout = ModuleLayout((2, 2), VIT.naming)
    with pytest.raises(KeyError, match=r'backbone\.mystery\.weight'):
        layout.module_of('backbone.mystery.weight')
    state = {**synthetic_state_dict(layout), 'backbone.mystery.weight': torch.zeros(1)}
    with pytest.raises(KeyError, match=r'backbone\.mystery\.weight'):
        convert_state_dict(state, layout, layout)
    # A bare prefix without the separator is not a stem/tail key either.
    with pytest.raises(KeyError, match='backbone.ln1weight'):
        layout.module_of('backbone.ln1weight')


def test_check_state_dict_accepts_a_fitting_state_dict() -> None:
    reference = {'a': torch.zeros(2, 3), 'b': torch.zeros(4)}
    check_state_dict({'a': torch.ones(2, 3), 'b': torch.ones(4)}, reference, 'ckpt.pth')


def test_check_state_dict_reports_missing_keys() -> None:
    reference = {'a': torch.zeros(2), 'b': torch.zeros(2)}
    with pytest.raises(LayoutError) as info:
        check_state_dict({'a': torch.zeros(2)}, reference, 'meta.pth')
    message = str(info.value)
    assert 'meta.pth does not fit the model' in message
    assert 'missing keys: b' in message
    assert 'unexpected' not in message and 'shape' not in message


def test_check_state_dict_reports_unexpected_keys() -> None:
    reference = {'a': torch.zeros(2)}
    with pytest.raises(LayoutError) as info:
        check_state_dict({'a': torch.zeros(2), 'extra.weight': torch.zeros(1)}, reference, 'module 1')
    message = str(info.value)
    assert 'module 1 does not fit the model' in message
    assert 'unexpected keys: extra.weight' in message
    assert 'missing' not in message and 'shape' not in message


def test_check_state_dict_reports_shape_mismatches() -> None:
    reference = {'a': torch.zeros(2, 3), 'b': torch.zeros(4)}
    with pytest.raises(LayoutError) as info:
        check_state_dict({'a': torch.zeros(3, 2), 'b': torch.zeros(4)}, reference, 'full.pth')
    message = str(info.value)
    assert 'shape mismatches' in message
    assert 'a: (3, 2) vs expected (2, 3)' in message
    assert 'b:' not in message
    assert 'missing' not in message and 'unexpected' not in message


def test_check_state_dict_reports_all_problems_and_truncates_long_lists() -> None:
    reference = {f'k{i:02d}': torch.zeros(1) for i in range(9)} | {'s': torch.zeros(2)}
    state = {'s': torch.zeros(3), 'x': torch.zeros(1)}
    with pytest.raises(LayoutError) as info:
        check_state_dict(state, reference, 'src')
    message = str(info.value)
    assert 'missing keys: k00, k01, k02, k03, k04, k05, k06, k07, ... (9 in all)' in message
    assert 'k08' not in message
    assert 'unexpected keys: x' in message
    assert 's: (3,) vs expected (2,)' in message

    # Eight keys are all shown, without a count.
    with pytest.raises(LayoutError) as info:
        check_state_dict({}, {f'k{i}': torch.zeros(1) for i in range(8)}, 'src')
    assert str(info.value) == 'src does not fit the model: missing keys: k0, k1, k2, k3, k4, k5, k6, k7'
