# Two commands: `make lab` (JupyterLab on the notebooks) and `make test` (the whole suite, as CI runs it).
# Both install from the tested set of versions in requirements/lock.txt (see `make lock`).
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch build, by default the one the lock was tested with; override where another build is needed,
# e.g. TORCH_PKGS="torch==2.9.1 torchvision==0.24.1" on aarch64.
TORCH_PKGS ?= -r requirements/torch.txt
# Everything else is pinned by this constraints file; CONSTRAINTS=none installs today's newest releases.
CONSTRAINTS ?= requirements/lock.txt
# Extra arguments for `jupyter lab`, e.g. LAB_ARGS="--ip 0.0.0.0 --no-browser --port 8888" on a remote machine.
LAB_ARGS ?=
STAMP := $(VENV)/.installed
ROOT_FLAG := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root,)
LOCK_CMD = $(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra lab -c requirements/torch.txt \
	--python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements/lock.txt

.PHONY: lab test test-fast test-browser test-latest install lock lock-upgrade clean-cache bench

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip wheel

# torch first (its own CUDA/CPU pins come with it), then the project under the lock minus the torch stack.
$(STAMP): pyproject.toml requirements/lock.txt requirements/torch.txt | $(PY)
	$(PY) -m pip install $(foreach pkg,$(TORCH_PKGS),'$(pkg)')
ifeq ($(CONSTRAINTS),none)
	$(PY) -m pip install -e ".[dev,lab]"
else
	grep -vE '^(torch|torchvision|triton)==|^(nvidia|cuda)-' $(CONSTRAINTS) > $(VENV)/constraints.txt
	$(PY) -m pip install -c $(VENV)/constraints.txt -e ".[dev,lab]"
endif
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (vavae-lab)"
	touch $(STAMP)

install: $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $(ROOT_FLAG) $(LAB_ARGS)

# CI runs this: unit + integration tests, then every notebook in smoke mode.
test: $(STAMP)
	$(PY) -m pytest -q --ignore=tests/browser tests/
	@if ls notebooks/*.ipynb >/dev/null 2>&1; then \
		VAVAE_LAB_PRESET=smoke $(PY) -m pytest -q --nbval-lax notebooks/; fi

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --ignore=tests/browser tests/

# The same suite on today's newest releases (own venv; the lock stays as it is). Torch stays at TORCH_PKGS.
test-latest:
	$(MAKE) test VENV=.venv-latest CONSTRAINTS=none

# CI runs this after `test`: notebook 03 in JupyterLab, driven by headless Chromium (installs chromium + playwright).
test-browser: $(STAMP)
	VENV=$(VENV) scripts/install_browser.sh
	VAVAE_LAB_REQUIRE_BROWSER=1 $(PY) -m pytest -q tests/browser

# Re-resolve requirements/lock.txt after a change to pyproject.toml, keeping the pinned versions where possible;
# lock-upgrade moves every package to today's newest release. Commit the lock after `make test` passes.
lock: | $(PY)
	$(PY) -m pip install -q uv
	$(LOCK_CMD)

lock-upgrade: | $(PY)
	$(PY) -m pip install -q uv
	$(LOCK_CMD) --upgrade

bench: $(STAMP)
	$(PY) benchmarks/tokenizer.py

clean-cache:
	rm -rf data/cache
