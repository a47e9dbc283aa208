# Two commands: `make lab` (JupyterLab on the notebooks) and `make test` (the whole suite, as CI runs it).
VENV ?= .venv
PY := $(VENV)/bin/python
# Override on machines that need a specific build, e.g. TORCH_PKGS="torch==2.14.1 torchvision==0.29.1"
TORCH_PKGS ?= torch>=2.4 torchvision>=0.19
STAMP := $(VENV)/.installed

.PHONY: lab test test-fast test-browser install clean-cache bench

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip wheel

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install $(foreach pkg,$(TORCH_PKGS),'$(pkg)')
	$(PY) -m pip install -e ".[dev,lab]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (vavae-lab)"
	touch $(STAMP)

install: $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

# CI runs this: unit + integration tests, then every notebook in smoke mode.
test: $(STAMP)
	$(PY) -m pytest -q --ignore=tests/browser tests/
	@if ls notebooks/*.ipynb >/dev/null 2>&1; then \
		VAVAE_LAB_PRESET=smoke $(PY) -m pytest -q --nbval-lax notebooks/; fi

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --ignore=tests/browser tests/

# CI runs this after `test`: notebook 03 in JupyterLab, driven by headless Chromium (installs chromium + playwright).
test-browser: $(STAMP)
	VENV=$(VENV) scripts/install_browser.sh
	VAVAE_LAB_REQUIRE_BROWSER=1 $(PY) -m pytest -q tests/browser

bench: $(STAMP)
	$(PY) benchmarks/tokenizer.py

clean-cache:
	rm -rf data/cache
