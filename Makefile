# Two entry points on a fresh clone: `make demo` (the main job) and `make test` (the tests).
# Both depend on `make install`, which is idempotent and cheap once done.

VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
DEMO    ?= out/demo

.PHONY: install data test demo clean

install: $(STAMP) data

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

data:
	@scripts/install-data.sh

test: install
	$(PY) -m pytest -q -ra

demo: install
	@echo "== training resnet18 briefly on a 4000-sample subset of Fashion-MNIST (the compression engine replaces this demo)"
	$(VENV)/bin/kondense zoo train resnet18 --dataset fashion-mnist --epochs 1 --train-samples 4000 --val-samples 1000 --out $(DEMO)/resnet18.pt
	@echo "== the six metrics of the trained model (accuracy on the full test split)"
	$(VENV)/bin/kondense profile --arch resnet18 --weights $(DEMO)/resnet18.pt --data fashion-mnist

clean:
	rm -rf $(VENV) out .pytest_cache
