# advseg: `make run` runs the study on the embedded MRI data, `make test` runs the suite.
VENV   ?= .venv
PYTHON ?= python3
CORES  ?= $(shell nproc)
BIN    := $(CURDIR)/$(VENV)/bin
# rules call the `advseg` command, so the venv's bin must come first on PATH
export PATH := $(BIN):$(PATH)

.PHONY: setup run test bench lint report mlflow-ui clean

setup: $(VENV)/.installed

# requirements.lock pins every package (torch==2.14.1 with torchvision==0.29.1);
# the package itself is installed editable on top, without re-resolving.
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

run: setup
	snakemake --cores $(CORES)
	@echo
	@echo "Tables:  results/tables/attack_summary.csv, results/tables/attack_losses.md"
	@echo "Plots:   results/plots/param_size_correlation.png, results/plots/dice_vs_eps.png, results/plots/examples/"
	@echo "Report:  make report   (writes results/report.html)"
	@echo "MLflow:  make mlflow-ui   (mlflow ui --backend-store-uri sqlite:///results/mlflow.db, on 127.0.0.1:5000)"

test: setup
	pytest

bench: setup
	python benchmarks/eps_sweep.py

lint: setup
	snakemake --lint

report: setup
	snakemake --report results/report.html

# The UI opens on its GenAI view; the runs are under "Model training", or straight at the URL printed here.
mlflow-ui: setup
	@test -f results/mlflow/tracking.json || { echo "no MLflow runs yet: run 'make run' first"; exit 1; }
	@echo "Runs: http://127.0.0.1:5000/#/experiments/$$(python -c 'import json; print(json.load(open("results/mlflow/tracking.json"))["experiment_id"])')/runs"
	mlflow ui --backend-store-uri sqlite:///results/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf results/*/ results/mlflow.db results/report.html .snakemake

# The SLURM integration test alone: a one-node cluster on localhost runs the tiny workflow
# through profiles/slurm (needs root, slurm-wlm and munge: .ci/install-slurm installs them).
.PHONY: slurm-test
slurm-test: setup
	pytest tests/test_slurm.py
