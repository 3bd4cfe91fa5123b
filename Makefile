# osma: set-up, tests and demo. Everything installs into .venv by itself.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
OSMA   := $(VENV)/bin/osma
STAMP  := $(VENV)/.installed
ZOO    ?= runs/zoo-tiny

.PHONY: install test demo zoo-deps zoo-mini zoo-mini64 clean

install: $(STAMP)

# Re-install only when the project metadata changes; torch 2.13.0 first, from the
# wheel on disk, so that no dependency can pull a multi-GB CUDA build.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	# constrained to the torch just installed, so that no extra (ray) can pull another one
	echo "torch==2.13.0" > $(VENV)/torch-constraint.txt
	$(PY) -m pip install -q -c $(VENV)/torch-constraint.txt -e ".[dev,ray]"
	# a pretrained DCGAN (weights inside the wheel) used as a zoo generator trained elsewhere;
	# --no-deps: its declared torchvision/requests are not needed by the generator module.
	$(PY) -m pip install -q --no-deps "gan-face-generate==1.1.1"
	touch $(STAMP)

test: install
	$(PY) -m pytest

demo: install
	bash scripts/demo.sh

# Debian photo packages used by the `mini` zoo preset (needs apt and root).
zoo-deps:
	@if command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    lomiri-wallpapers-16.04 mate-backgrounds plasma-workspace-wallpapers dataset-fashion-mnist; \
	else echo "apt-get not available: install the Debian photo packages by hand or use --real-dir"; fi

zoo-mini: install zoo-deps
	$(OSMA) zoo build --preset mini --out runs/zoo-mini --jobs 2

# 64x64 images for whole-image evidence and robustness (docs/real-images.md)
zoo-mini64: install zoo-deps
	$(OSMA) zoo build --preset mini64 --out runs/zoo-mini64 --jobs 2

clean:
	rm -rf $(VENV) runs .pytest_cache
