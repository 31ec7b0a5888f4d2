# The two commands of the README: `make demo` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The TypeScript client (docs/frontend.md); its packages, the OpenAPI linter among them, come
# from its lockfile. Without npm, `make test` runs and the client's tests skip saying so.
CLIENT := clients/typescript
CLIENT_STAMP := $(CLIENT)/node_modules/.installed
NPM := $(shell command -v npm 2>/dev/null)

.PHONY: install demo test lint format bench chaos image clean eval openapi recipe client \
	client-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(CLIENT_STAMP): $(CLIENT)/package-lock.json
	cd $(CLIENT) && npm ci
	touch $@

client-deps: $(CLIENT_STAMP)

demo: $(STAMP)
	$(BIN)/interview-scorer demo

# The whole suite on SQLite, then again on PostgreSQL (a throwaway cluster, tests/databases.py).
test: $(STAMP) $(if $(NPM),$(CLIENT_STAMP))
	$(BIN)/pytest
	SCORER_TEST_DATABASE=postgresql $(BIN)/pytest

lint: $(STAMP) $(CLIENT_STAMP)
	$(BIN)/ruff format --check service tests migrations bench
	$(BIN)/ruff check service tests migrations bench
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile
	cd $(CLIENT) && npm run --silent lint:openapi && npm run --silent lint

format: $(STAMP)
	$(BIN)/ruff format service tests migrations bench
	$(BIN)/ruff check --fix service tests migrations bench

# The throughput benchmark (docs/performance.md): a few minutes on 2 cores; BENCH_ARGS=--help.
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Faults under load (docs/chaos.md): 200 requests in flight while Redis, PostgreSQL, SMTP, the
# worker, the API and the upstreams fail in turn, on SQLite then PostgreSQL (about 10 minutes);
# then the checks. CHAOS_ARGS=--help.
chaos: $(STAMP)
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

# The container image (docs/image.md): docker or podman; PYTHON_IMAGE=bootstrap makes the base
# from Debian's packages where no registry can be reached. IMAGE=... names the tag.
image:
	PYTHON_IMAGE="$(PYTHON_IMAGE)" IMAGE="$(IMAGE)" ENGINE="$(ENGINE)" bash deploy/build-image

# The golden interviews against a real model: make eval LLM_BASE_URL=... [LLM_API_KEY=...]
# [LLM_MODEL=...]; prints agreement with the expected ranges (tests/golden/run_eval.py).
eval: $(STAMP)
	LLM_BASE_URL="$(LLM_BASE_URL)" LLM_API_KEY="$(LLM_API_KEY)" LLM_MODEL="$(LLM_MODEL)" \
		$(BIN)/python -m tests.golden.run_eval

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache .hypothesis .cache \
		$(CLIENT)/node_modules $(CLIENT)/dist

# The committed OpenAPI document (tests/test_openapi.py fails when the code drifts from it).
openapi: $(STAMP)
	$(BIN)/interview-scorer openapi --output openapi.json

# The document, then the client's types generated from it, then the client built
# (`make lint` fails while the committed types differ from the document).
client: openapi $(CLIENT_STAMP)
	cd $(CLIENT) && npm run --silent generate && npm run --silent build

# The Dockerfile's recipe from an installed wheel, without a container engine.
recipe:
	bash .ci/image-recipe
