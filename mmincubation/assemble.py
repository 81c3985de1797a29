"""Assembly: K incubated modules -> one plain mmpretrain checkpoint of the full model."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from .checkpoint import (
    CheckpointError,
    check_finite,
    check_output,
    file_digest,
    incubation_meta,
    load_weights,
    save_atomic,
)
from .layout import LayoutError, ModuleLayout, check_state_dict, layout_from_tag
from .phases import Phase
from .tags import Tag


def _module_record(tag: Tag, path: str | os.PathLike) -> tuple[ModuleLayout, int]:
    """The layout and module index a module checkpoint's tag records, checked to make sense."""
    try:
        module_layout = layout_from_tag(tag.to_dict())
        module = int(tag.module)
        module_layout.blocks_of(module)  # in range
    except (KeyError, TypeError, ValueError) as error:  # LayoutError is a ValueError
        raise CheckpointError(f'module checkpoint {path} has a broken mmincubation tag {tag.to_dict()} '
                              f'({error}); expected the layout and module index of an incubated module') from error
    return module_layout, module


def _described(layout: ModuleLayout) -> str:
    stages = f' in stages {layout.stage_depths}' if len(layout.stage_depths) > 1 else ''
    return f'a {layout.naming.name} backbone, layout {layout.depths}{stages}'


def assemble_modules(module_files: Sequence[str | os.PathLike],
                     reference: Mapping[str, object] | None = None, layout: ModuleLayout | None = None) -> dict:
    """Merge incubated modules into a full-model checkpoint, validating everything first.

    Every file must be an exported module of the same layout, each module must appear exactly once,
    and each file must hold only its own module's parameters. With ``reference`` (the full model's
    state dict, or tensors of the right shapes), keys and shapes are checked against it too; with
    ``layout`` (the one the config asks for), modules incubated for another layout are refused.
    """
    if not module_files:
        raise CheckpointError('no module checkpoint given to assemble')
    expected = layout
    layout, merged, sources, dataset_meta = None, {}, {}, {}
    for path in module_files:
        checkpoint = load_weights(path)
        module_layout, module = _module_record(incubation_meta(checkpoint, path, phase='incubate'), path)
        check_finite(checkpoint['state_dict'], f'module checkpoint {path}')
        if expected is not None and module_layout != expected:
            raise CheckpointError(f'module checkpoint {path} was incubated for {_described(module_layout)}, '
                                  f'the config asks for {_described(expected)}')
        if layout is None:
            layout = module_layout
        elif module_layout != layout:
            raise CheckpointError(f'module checkpoint {path} was incubated for {_described(module_layout)}, '
                                  f'{sources[min(sources)]} for {_described(layout)}')
        if module in sources:
            raise CheckpointError(f'module {module} is given twice: {sources[module]} and {path}')
        try:
            foreign = sorted(key for key in checkpoint['state_dict'] if layout.module_of(key) != module)
        except (KeyError, LayoutError) as error:
            raise CheckpointError(f'module checkpoint {path} (module {module}) holds a key of no module of '
                                  f'layout {layout.depths}: {error}') from error
        if foreign:
            raise CheckpointError(f'module checkpoint {path} (module {module}) holds parameters of other '
                                  f'modules: {foreign[:5]}')
        sources[module] = str(path)
        merged.update(checkpoint['state_dict'])
        if module == layout.num_modules - 1:  # the head's module names the classes
            dataset_meta = checkpoint['meta'].get('dataset_meta') or {}
    missing = sorted(set(range(layout.num_modules)) - set(sources))
    if missing:
        raise CheckpointError(f'modules {missing} of layout {layout.depths} are missing; '
                              f'got {dict(sorted(sources.items()))}')
    if reference is not None:
        check_state_dict(merged, reference, source=f'the assembly of {list(sources.values())}')
    files = [sources[m] for m in range(layout.num_modules)]
    tag = Tag.of_layout('assemble', layout.tag(), inputs=module_inputs(files), extra=dict(sources=files))
    return dict(meta=tag.meta(dataset_meta=dataset_meta), state_dict=merged)


def module_inputs(module_files: Sequence[str | os.PathLike]) -> dict[str, str]:
    """The ``inputs`` of an assembly's tag: ``{module_<k>.pth: sha256}`` of the files in module order."""
    return {Phase('incubate', k).product_name: file_digest(path) for k, path in enumerate(module_files)}


def assemble(module_files: Sequence[str | os.PathLike], out_file: str | os.PathLike,
             reference: Mapping[str, object] | None = None, layout: ModuleLayout | None = None) -> Path:
    """Validate and merge ``module_files``, then write ``out_file`` atomically.

    An ``out_file`` that exists, is a folder or is one of ``module_files`` (also through a link) is refused
    before any module is read: writing it would lose that file.
    """
    check_output(out_file, module_files, replace=False)
    return save_atomic(assemble_modules(module_files, reference, layout), out_file)
