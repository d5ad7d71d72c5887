# procgen-trex: the two commands are `make demo` (the main job) and `make test`.
# Both install everything first (`make setup`), so each works on a fresh clone.

PYTHON ?= python3
VENV   ?= .venv
# torch is installed first, pinned, so pip never picks a build on its own. On a machine
# whose pip finds a local CPU wheel of this version, that wheel is used; elsewhere pip takes
# PyPI's default build (CUDA on Linux). Override for another build, e.g.
#   make setup TORCH="torch --index-url https://download.pytorch.org/whl/cu124"
TORCH  ?= torch==2.13.0
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: setup demo test lint format bench clean-demo

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test,tensorboard]'
	$(PY) -c "import torch, procgen, stable_baselines3; print('torch', torch.__version__, '| cuda', torch.cuda.is_available())"
	touch $(STAMP)

demo: setup
	$(PY) scripts/demo.py

# one pytest worker per core (pytest-xdist): the suite is mostly single-threaded subprocesses
test: lint
	$(PY) -m pytest -q -n auto

# ruff (pinned in pyproject.toml, so every machine formats alike): lint and format check;
# `make format` rewrites the files
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: setup
	$(PY) benchmarks/bench_ppo_precision.py
	$(PY) benchmarks/bench_gen_demos.py
	$(PY) benchmarks/bench_sweep.py
	$(PY) benchmarks/bench_learned_reward_cost.py

clean-demo:
	rm -rf demo_output
