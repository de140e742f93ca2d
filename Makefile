# Set-up and common tasks. Every target creates or reuses the local virtual environment
# .venv (idempotent: it is rebuilt only when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup smoke test perf clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch and torchvision first, as the pair docs/architecture.md fixes.
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e ".[test]"
	# facenet-pytorch pins torch<=2.3 and numpy<2 in its metadata but works with this stack.
	$(BIN)/python -m pip install -q --no-deps facenet-pytorch==2.6.0
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# The offline smoke run: tiny random models on the embedded mini suite, generation + scoring of
# EZIGen and the text-only baseline, then the leaderboard and the HTML report (gallery).
smoke: setup
	$(BIN)/python -m bench run --method ezigen --suite dreambench --preset smoke
	$(BIN)/python -m bench run --method sd --suite dreambench --preset smoke
	$(BIN)/python -m bench report runs/dreambench/ezigen-smoke runs/dreambench/sd-smoke --out runs/reports --html --versus sd
	@echo
	@echo "Leaderboard:  runs/reports/leaderboard-dreambench.md"
	@echo "Sample grid:  runs/reports/leaderboard-dreambench-samples.png"
	@echo "HTML report:  file://$(CURDIR)/runs/reports/html/index.html  (open it in a browser; no network needed)"
	@echo "Images:       runs/dreambench/ezigen-smoke/images/ and runs/dreambench/sd-smoke/images/"

test: setup
	$(BIN)/python -m pytest -q

perf: setup
	$(BIN)/python benchmarks/gpu_throughput.py --device cpu --threads 1   # on a GPU, in one call: python benchmarks/gpu_throughput.py

clean-venv:
	rm -rf $(VENV)
