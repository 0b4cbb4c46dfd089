# advseg: `make run` runs the study on the embedded MRI data, `make test` runs the suite.
VENV   ?= .venv
PYTHON ?= python3
CORES  ?= $(shell nproc)
BIN    := $(CURDIR)/$(VENV)/bin
# rules call the `advseg` command, so the venv's bin must come first on PATH
export PATH := $(BIN):$(PATH)

.PHONY: setup run test test-fast bench lint report mlflow-ui mlflow-server clean

setup: $(VENV)/.installed

# requirements.lock pins every runtime package (torch==2.14.1 with torchvision==0.29.1),
# requirements-test.lock adds the test extra (pytest, monai); the package itself is
# installed editable on top, without re-resolving. A runtime-only install:
#   pip install -r requirements.lock && pip install --no-deps -e .
$(VENV)/.installed: requirements.lock requirements-test.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements-test.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

run: setup
	snakemake --cores $(CORES)
	@echo
	@echo "Tables:  results/tables/ (attack_summary.csv, attack_losses.md, sanity.md, transfer.csv, ...)"
	@echo "Plots:   results/plots/ (param_size_correlation.png, dice_vs_eps.png, transfer.png, loss_curve.png, examples/)"
	@echo "Costs:   python benchmarks/job_costs.py   (jobs, time and memory per rule)"
	@echo "Report:  make report   (writes results/report.html)"
	@echo "MLflow:  make mlflow-ui"

# the whole suite, as CI runs it
test: setup
	pytest

# while you work: every test file but the slow ones (marked slow: Snakemake, MLflow servers, training)
test-fast: setup
	pytest -m "not slow"

bench: setup
	python benchmarks/eps_sweep.py
	python benchmarks/attack_bench.py
	python benchmarks/dag_size.py

lint: setup
	snakemake --lint

report: setup
	snakemake --report results/report.html

# The UI opens on its GenAI view; the runs are under "Model training", or straight at the URL printed here.
# It follows mlflow.tracking_uri of config.yaml (with CONFIG=my.yaml on top, as --configfile does).
CONFIG       ?= config.yaml
MLFLOW_PORT  ?= 5000
mlflow-ui: setup
	advseg mlflow-ui --config $(CONFIG) --port $(MLFLOW_PORT)

# An MLflow server for runs from several machines: SQLite backend, artifacts proxied into results/.
# Open it to cluster nodes with MLFLOW_HOST=0.0.0.0 MLFLOW_ALLOWED_HOSTS=<this host's name>:$(MLFLOW_PORT).
MLFLOW_HOST          ?= 127.0.0.1
MLFLOW_ALLOWED_HOSTS ?=
MLFLOW_WORKERS       ?= 4
MLFLOW_SERVER_DIR    ?= results/mlflow-server
mlflow-server: setup
	@mkdir -p $(MLFLOW_SERVER_DIR)/artifacts
	@echo "MLflow server on http://$(MLFLOW_HOST):$(MLFLOW_PORT) (runs in $(MLFLOW_SERVER_DIR)/mlflow.db)."
	@echo "Jobs log to it with, in config.yaml or your --configfile:"
	@echo "  mlflow:"
	@echo "    tracking_uri: http://$$(hostname):$(MLFLOW_PORT)   # http://127.0.0.1:$(MLFLOW_PORT) on this machine only"
	@echo "Cluster nodes reach it only with MLFLOW_HOST=0.0.0.0 MLFLOW_ALLOWED_HOSTS=$$(hostname):$(MLFLOW_PORT)"
	@echo "(there is no login: open it only on a trusted network). Runs logged while it is down:"
	@echo "  advseg mlflow-sync --tracking results/mlflow/tracking.json"
	mlflow server --backend-store-uri sqlite:///$(MLFLOW_SERVER_DIR)/mlflow.db \
		--artifacts-destination $(MLFLOW_SERVER_DIR)/artifacts \
		--host $(MLFLOW_HOST) --port $(MLFLOW_PORT) --workers $(MLFLOW_WORKERS) \
		$(if $(MLFLOW_ALLOWED_HOSTS),--allowed-hosts $(MLFLOW_ALLOWED_HOSTS))

clean:
	rm -rf results/*/ results/mlflow.db results/report.html .snakemake

# The SLURM integration test alone: a one-node cluster on localhost runs the tiny workflow
# through profiles/slurm (needs root, slurm-wlm and munge: .ci/install-slurm installs them).
.PHONY: slurm-test
slurm-test: setup
	pytest tests/test_slurm.py
