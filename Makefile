# Two entry points for a fresh machine: `make run` (the service, embedded default) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: run test lint lock clean redis-server promtool icc-profiles chromium load mutate

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch==2.13.0 first: a CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.service: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.service
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# The lock file the Docker images install from (every dependency but torch, which comes from
# the CPU or CUDA index the image is built for, with its CUDA libraries): pinned with hashes,
# for the images' platform. Re-run after changing pyproject.toml's dependencies.
TORCH_VERSION := 2.13.0
CUDA_WHEELS := cuda-bindings cuda-pathfinder cuda-toolkit triton nvidia-cublas nvidia-cuda-cupti \
	nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile \
	nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-nccl-cu13 \
	nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx
lock: $(BIN)/python
	@[ -x $(BIN)/uv ] || $(BIN)/pip install -q uv==0.13.8
	echo 'torch==$(TORCH_VERSION)' > $(VENV)/torch-constraint.txt
	$(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --constraints $(VENV)/torch-constraint.txt \
		--no-emit-package torch $(addprefix --no-emit-package ,$(CUDA_WHEELS)) \
		--custom-compile-command 'make lock' --output-file requirements.lock

run: $(VENV)/.service
	@echo "srstore is installed in $(BIN): 'source $(BIN)/activate' puts it on your PATH"
	$(BIN)/srstore serve

redis-server:
	@command -v redis-server >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q redis-server; }

# promtool checks the Prometheus config, alert rules and dashboard queries in the tests. It is
# taken out of Debian's prometheus package into the venv: installing that package would also
# enable a Prometheus server at boot.
promtool: $(BIN)/promtool

$(BIN)/promtool: | $(BIN)/python
	@set -e; unpack=$$(mktemp -d); trap 'rm -rf "$$unpack"' EXIT; cd "$$unpack"; \
	apt-get download -q prometheus 2>/dev/null || { $(SUDO) apt-get update -q && apt-get download -q prometheus; }; \
	dpkg-deb -x prometheus_*.deb .; install -m 755 usr/bin/promtool $(abspath $(BIN))/promtool

# Wide-gamut and CMYK ICC profiles for the colour-management tests (Debian, DFSG-free).
icc-profiles:
	@[ -f /usr/share/color/icc/compatibleWithAdobeRGB1998.icc ] && [ -f /usr/share/color/icc/ghostscript/ps_cmyk.icc ] || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q icc-profiles-free libgs-common; }

# Headless Chromium and its WebDriver drive the console's browser tests (Debian's packages,
# no browser download).
chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver; }

# pytest-xdist: whole files to each worker (module fixtures and shared state stay in one
# process), slow files first. Four workers on 2 cores: much of the suite waits on servers,
# subprocesses and sockets; on a quiet machine 3 workers took 547-554 s, 4 took 405 s
# (bench/RESULTS.md, "The test suite").
TEST_WORKERS ?= 4
test: $(VENV)/.dev redis-server promtool icc-profiles chromium
	@! git grep -nE '^(<<<<<<<|>>>>>>>)( |$$)' -- . || { echo 'merge conflict markers left in the tree'; exit 1; }
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy srstore app worker trainer bench render config models policy imaging storage cache ledger keyspace apikeys
	$(BIN)/lint-imports
	timeout -k 30 2700 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The bounded load run of RELIABILITY.md (not part of `make test`): LOAD_ARGS=--duration 20
load: $(VENV)/.dev redis-server
	$(BIN)/python -m bench.load $(LOAD_ARGS)

# Mutation testing (not part of `make test`; CPU-heavy): the named breakages in mutations/named.py
# must each fail their tests, then mutmut scores the critical functions (MUTATE_ARGS=--minutes 20).
mutate: $(VENV)/.dev redis-server
	$(BIN)/python mutations/named.py
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python mutations/score.py $(MUTATE_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) data mutants
