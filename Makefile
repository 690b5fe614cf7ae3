# pmtrec-lab: every target creates .venv when missing and installs the pinned stack in one resolve.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TRACKING_STAMP := $(VENV)/.tracking-installed
DATA_DIR ?= ../shared/datasets
export DGLBACKEND := pytorch
export PMTREC_DATA_DIR ?= $(abspath $(DATA_DIR))
export PLOTLY_RENDERER ?= notebook

.PHONY: venv tracking-deps test test-fast test-unit lint report bench browser-deps clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found (Python 3.11 is required)"; exit 1; }
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name pmtrec-lab --display-name "pmtrec-lab (.venv)" >/dev/null
	@touch $(STAMP)

## MLflow for --track (an extra: see requirements-tracking.txt's header for why --no-deps).
tracking-deps: $(TRACKING_STAMP)

$(TRACKING_STAMP): $(STAMP) requirements-tracking.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-tracking.txt
	@touch $(TRACKING_STAMP)

# Headless Chromium for the JupyterLab browser test (Debian package; Playwright cannot download browsers here).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); \
	  else echo "warning: chromium missing and not root; the browser test will skip (fail under CI=true)"; fi; }

## Every tier: unit, real data, notebooks, browser. This is what CI runs.
test: venv tracking-deps browser-deps lint
	$(BIN)/python notebooks/build_notebooks.py --check
	$(BIN)/python -m pytest -q --timeout=1800

## Fast inner loop: unit tier only (no real datasets, notebooks or browser).
test-fast: venv tracking-deps
	$(BIN)/python -m pytest -q -m "not realdata and not slow and not notebook and not browser" --timeout=600

lint: venv
	$(BIN)/ruff check pmtrec_lab tests benchmarks notebooks/build_notebooks.py

## The main job: train on the embedded default dataset (ml-100k) and write the report under reports/.
report: venv
	$(BIN)/pmtrec-lab report --out reports

bench: venv
	$(BIN)/python benchmarks/step_time.py
	$(BIN)/python benchmarks/eval_time.py

clean:
	rm -rf $(VENV) .cache reports/*.html reports/*.ipynb
