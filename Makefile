# Two entry points on a fresh clone: `make demo` (the main job) and `make test` (the tests).
# Both depend on `make install`, which is idempotent and cheap once done.

VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
DEMO    ?= out/demo

.PHONY: install data horovod test demo clean

install: $(STAMP) data horovod

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test,operator]'
	touch $(STAMP)

data:
	@scripts/install-data.sh

# Horovod 0.28.1 patched for torch 2.14 (C++20): built once into ~/.cache/kondense/wheels
# (about 5 minutes on 2 cores), then installed from that cache in seconds.
horovod: $(STAMP)
	@scripts/build-horovod.sh $(VENV)

test: install
	$(PY) -m pytest -q -ra

# The main job: compress a zoo model on Fashion-MNIST within delta = 1 point. To fit about
# 15 minutes on 2 CPU cores it trains its own ResNet-18 on a 10,000-sample subset first
# (the zoo's full weights take an hour here) and fine-tunes on that subset.
demo: $(STAMP) data  # no Horovod: the demo runs one process
	@echo "== 1/2 training resnet18 on a 10,000-sample subset of Fashion-MNIST (2 epochs)"
	@test -f $(DEMO)/resnet18.pt || $(VENV)/bin/kondense zoo train resnet18 --dataset fashion-mnist --epochs 2 \
		--train-samples 10000 --val-samples 2000 --test-samples 2000 --out $(DEMO)/resnet18.pt
	@echo "== 2/2 compressing it within delta = 1 point (subset: 10,000 train, 2,000 val, 2,000 test samples)"
	$(VENV)/bin/kondense compress --model $(DEMO)/resnet18.pt --data fashion-mnist --delta 1 --stage 2 --out $(DEMO)/compressed \
		--train-samples 10000 --val-samples 2000 --test-samples 2000 --ratios 0.5 0.25 --scan-samples 500 --max-steps 3

clean:
	rm -rf $(VENV) out .pytest_cache
