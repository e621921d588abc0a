# The two commands of the README:
#   make demo   set up everything, start the local cluster with cachewarden in it
#               (make demo NODE=kind: on a real node, kind on the node image built here)
#   make test   set up everything, run the whole test suite (unit, integration, e2e, real node)
# Both install what they need: Debian packages (redis-server), the virtual environment, and the
# local cluster's binaries (built once from Go modules into ~/.cache/cachewarden/bin).

VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
PIP_STAMP = $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# process: the fast lane (devcluster's process kubelet); kind: a real node (Docker, images built here).
NODE   ?= process

.PHONY: demo test test-unit test-integration test-e2e test-realnode setup system-deps venv binaries bench lint down generate audit check-imports

demo: setup binaries
	$(VENV)/bin/cachewarden dev up --node $(NODE)

down:
	$(VENV)/bin/cachewarden dev down --node $(NODE)

test: setup binaries audit
	$(VENV)/bin/pytest tests

test-unit: setup
	$(VENV)/bin/pytest tests/unit

test-integration: setup
	$(VENV)/bin/pytest tests/unit tests/integration

test-e2e: setup binaries
	$(VENV)/bin/pytest tests/e2e

# The real-node lane alone: the images, the kind node image, a kind cluster (docs/devcluster.md).
test-realnode: setup binaries
	$(VENV)/bin/pytest tests/realnode

setup: system-deps venv

# redis-server for the integration tests and the fast lane's Redis pod; Docker's engine, mmdebstrap and
# jq for the real-node lane (images built from Debian packages; jq for runc-host-compat).
SYSTEM_PACKAGES = redis-server redis-tools docker.io mmdebstrap jq
system-deps:
	@missing=; for cmd in redis-server dockerd mmdebstrap jq; do command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$cmd"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages ($(SYSTEM_PACKAGES)): missing$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	  $$SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true; fi

venv: $(PIP_STAMP)

$(PIP_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools
	$(PY) -m pip install -q -e '.[test,bench,dev]'
	rm -f $(VENV)/.installed-*; touch $@

# Both lanes' binaries: the control plane and helm, plus kubelet, kubeadm, kube-proxy, kind, CoreDNS,
# kube-router (NetworkPolicy) and pause for the real node.
binaries:
	devcluster/build.sh --real-node

bench: setup
	$(PY) bench/engine.py
	$(PY) bench/service.py
	$(PY) bench/resp.py

# Security audit (docs/reliability.md): bandit at medium severity and up, against a reviewed baseline
# (each entry justified in the doc: a new finding fails), and the installed venv's dependencies
# (pip-audit, with a fallback where its per-version service is unreachable: a known vulnerability
# fails, an audit that could not reach its data says DEGRADED and names the packages, never fails).
AUDIT_PATHS = cachewarden cache_runtime cache_operator devcluster examples .ci
audit: setup
	$(VENV)/bin/bandit -q -ll -r $(AUDIT_PATHS) -b .ci/bandit-baseline.json
	$(PY) .ci/audit_deps.py

# Fails on an import cycle between the project's modules, or a dependency that points the wrong way
# (engine <- service <- operator <- command); tests/unit/test_import_cycles.py says how it reads them.
check-imports: setup
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/unit/test_import_cycles.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy cachewarden cache_runtime cache_operator devcluster
	$(VENV)/bin/mypy --explicit-package-bases bench   # bench/ holds scripts, not a package (no __init__.py); they import each other as bench._x

# Regenerate what is generated from the code (the tests fail when the checked-in copies drift).
generate: setup
	$(VENV)/bin/cachewarden crds --write crds/
	cp crds/cache*.cachewarden.io.yaml charts/cachewarden/crds/   # the chart ships the same CRDs (tests/unit/test_chart_render.py)
	$(PY) -m cache_operator.apidocs docs/api-reference.md
	$(PY) -m cache_runtime.config_doc docs/configuration.md
