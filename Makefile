# The README's two commands: `make demo` (install + the whole incubation pipeline on Fashion-MNIST)
# and `make test` (install + lint + tests). Both create or reuse .venv and install idempotently.
VENV ?= .venv
PY := $(VENV)/bin/python
export VENV

.PHONY: install demo demo-downstream test lint

install:
	bash tools/install.sh

DEMO_CONFIG := configs/incubate_demo_fashion_mnist.py
DEMO_WORK_DIR := work_dirs/incubate_demo_fashion_mnist

demo: install
	$(PY) tools/train.py $(DEMO_CONFIG) --phase all --work-dir $(DEMO_WORK_DIR)
	$(PY) tools/analysis_tools/summarize_incubation.py $(DEMO_WORK_DIR)

# Needs `make demo` first: its fine-tuned (incubated) and E2E checkpoints become the backbones.
demo-downstream: install
	$(PY) tools/downstream_demo.py

lint: install
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest -q tests
