"""Sphinx configuration: the user guides (Markdown, through myst-parser) and the API reference (autodoc).

Build: ``sphinx-build -W -b html docs <out>`` (warnings are errors; tests/test_docs.py does this).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's package, also when it is not installed

project = 'mmincubation'
author = 'mmincubation contributors'
copyright = 'mmincubation contributors'  # noqa: A001 (Sphinx's name for it)
release = version = '0.1.0'

extensions = ['sphinx.ext.autodoc', 'sphinx.ext.napoleon', 'sphinx.ext.viewcode', 'myst_parser']
source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
root_doc = 'index'
exclude_patterns = ['_build']

# Markdown: headings up to ### get anchors, so `page.md#a-heading` links work as on GitHub.
myst_heading_anchors = 3
myst_enable_extensions = ['colon_fence']

autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
autodoc_default_options = {'members': True, 'show-inheritance': True}

html_theme = 'alabaster'
html_static_path: list[str] = []
