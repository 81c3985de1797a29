"""The documentation: README.md stays a front page, every relative link of README.md and docs/**/*.md leads to a
file (and heading) that exists, and the Sphinx site (user guides + API reference) builds with warnings as errors."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / 'docs'
#: README.md is the front page: what it is, results, quick start, links; the rest lives in docs/.
README_MAX_LINES = 220

#: ``[text](target)`` and ``![alt](target)``; the target ends at the first blank or closing parenthesis.
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')
FENCE = re.compile(r'^\s*(```|~~~)')
HEADING = re.compile(r'^(#{1,6})\s+(.+?)\s*#*\s*$')


def markdown_files() -> list[Path]:
    """README.md and every Markdown page under docs/ (less a local Sphinx build in docs/_build)."""
    return [ROOT / 'README.md', *sorted(path for path in DOCS.rglob('*.md') if '_build' not in path.parts)]


def outside_fences(text: str) -> list[str]:
    """The lines of Markdown ``text`` outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor of a heading (myst-parser's ``myst_heading_anchors`` makes the same):
    lower case, punctuation dropped, spaces to hyphens; ``## The demo (`make demo`)`` -> ``the-demo-make-demo``."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def anchors(path: Path) -> set[str]:
    """The heading anchors of a Markdown file, repeated headings numbered as GitHub does (``-1``, ``-2``)."""
    result, counts = set(), {}
    for line in outside_fences(path.read_text()):
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = counts.get(base, 0)
            counts[base] = count + 1
            result.add(base if count == 0 else f'{base}-{count}')
    return result


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Each relative link of ``path`` whose file, or whose ``#anchor`` in a Markdown file, does not exist; links
    in code (fenced blocks, inline spans) are not links."""
    broken = []
    for line in outside_fences(path.read_text()):
        for target in LINK.findall(re.sub(r'`[^`]*`', '', line)):
            if re.match(r'^[a-z][a-z0-9+.-]*:', target):  # https:, mailto:, ...: not ours to check here
                continue
            name, _, anchor = target.partition('#')
            linked = (path.parent / name).resolve() if name else path
            where = f'{path.relative_to(root)}: ({target})'
            if not linked.exists():
                broken.append(f'{where}: no file {linked.relative_to(root) if linked.is_relative_to(root) else linked}')
            elif anchor and linked.suffix == '.md' and anchor not in anchors(linked):
                broken.append(f'{where}: no heading with anchor #{anchor} in {linked.relative_to(root)}')
    return broken


def test_readme_is_a_front_page_that_links_the_guides():
    readme = (ROOT / 'README.md').read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES, 'README.md grew: move the details into docs/'
    for page in ('docs/get_started.md', 'docs/benchmarks.md', 'docs/how_it_works.md', 'docs/compatibility.md',
                 *(f'docs/user_guides/{name}.md' for name in ('pipeline', 'configs', 'cluster', 'downstream',
                                                              'own_data'))):
        assert f']({page}' in readme, page
    for command in ('make demo', 'make test', 'pip install .', 'pip install -e .', 'mim install .'):
        assert command in readme, command
    assert '@inproceedings{' in readme and 'pages     = {17335--17345}' in readme


def test_every_relative_link_resolves():
    broken = [problem for path in markdown_files() for problem in broken_links(path)]
    assert not broken, '\n'.join(broken)


def test_the_link_check_sees_broken_links_and_anchors(tmp_path):
    """The checker itself: a missing file and a missing heading are reported, code spans and URLs are not links."""
    (tmp_path / 'other.md').write_text('# Other\n## A heading (`with code`)\n```\n## not a heading\n```\n')
    page = tmp_path / 'page.md'
    page.write_text('[ok](other.md#a-heading-with-code) [gone](missing.md) [bad](other.md#not-a-heading)\n'
                    '[self](#top) `[code](nowhere.md)` [web](https://example.org/x.md)\n# Top\n')
    assert broken_links(page, tmp_path) == [
        'page.md: (missing.md): no file missing.md',
        'page.md: (other.md#not-a-heading): no heading with anchor #not-a-heading in other.md']


def test_sphinx_site_builds_without_warnings(tmp_path):
    """``sphinx-build -W`` of docs/: the Markdown guides (myst-parser), every page in a toctree, and the API
    reference imported from the package's docstrings."""
    out = tmp_path / 'html'
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    run = subprocess.run([sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q', '-b', 'html',
                          '-d', str(tmp_path / 'doctrees'), str(DOCS), str(out)],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    for page in ('index', 'get_started', 'benchmarks', 'how_it_works', 'compatibility', 'user_guides/own_data'):
        assert (out / f'{page}.html').is_file(), page
    api = (out / 'api.html').read_text()
    for module in ('phases', 'tags', 'checkpoint', 'layout', 'backbones', 'make_meta', 'assemble', 'convert_official',
                   'engine.runner', 'engine.hooks', 'models', 'datasets'):
        assert f'id="module-mmincubation.{module}"' in api, module
    for documented in ('layout.ModuleLayout', 'tags.Tag', 'phases.Phase', 'engine.runner.IncubationRunner',
                       'engine.hooks.RandomStateHook', 'models.IncubationClassifier',
                       'datasets.CompressedFashionMNIST'):
        assert f'id="mmincubation.{documented}"' in api, documented
    assert '_images/where_incubation_wins.png' in (out / 'benchmarks.html').read_text()  # the figures came along
    assert (out / '_images' / 'where_incubation_wins.png').stat().st_size > 10_000
