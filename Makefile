# The README's two commands: `make demo` (install + the whole incubation pipeline on Fashion-MNIST)
# and `make test` (install + lint + tests). Both create or reuse .venv and install idempotently.
VENV ?= .venv
PY := $(VENV)/bin/python
export VENV

.PHONY: install demo test lint

install:
	bash tools/install.sh

demo: install
	$(PY) tools/demo.py

lint: install
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest -q tests
