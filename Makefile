# The verbs people and CI use; `make help` lists them.
SHELL := /bin/bash
PYTHON := .venv/bin/python
GATEWAYS ?= 2
FUNCTION_HOSTS ?= 1
# Extra pytest options: make test ARGS="-m integration -x"
ARGS ?=
# The Redis of the local stack and of the tests' stacks: standalone (one server) or cluster
# (3 masters, 3 replicas), as in make dev REDIS=cluster or make test REDIS=cluster.
REDIS ?= standalone
export REDIS
STACK := $(PYTHON) -m devstack
STACK_ARGS = --gateways $(GATEWAYS) --function-hosts $(FUNCTION_HOSTS) --redis $(REDIS)
# What test-cluster runs (and make test after the whole suite): the e2e tests and the
# integration tests of what changes on a cluster (key routing, intake, partitions, sequencing).
CLUSTER_TESTS ?= tests/e2e $(addprefix tests/integration/,test_shards.py test_send_intake.py \
	test_partitions.py test_message_function.py test_room_events.py test_frames_lua.py \
	test_runtime_resilience.py)
MYPY_TARGETS ?= $(wildcard chat devstack functions realtime infra bench scripts/*.py)

.DEFAULT_GOAL := help
.PHONY: help bootstrap dev dev-start dev-stop dev-status test test-cluster test-image lint lock bench \
	up down deploy destroy smoke

help: ## list the verbs
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

bootstrap: ## install what is missing: system packages, .venv, Kafka jars
	@scripts/bootstrap.sh

dev: bootstrap ## run the whole stack in the foreground (no docker); Ctrl-C stops it
	@$(STACK) dev $(STACK_ARGS)

dev-start: bootstrap ## start the stack in the background; returns once every part is healthy
	@$(STACK) start $(STACK_ARGS)

dev-stop: ## stop the background stack
	@$(STACK) stop

dev-status: ## show what of the local stack runs
	@$(STACK) status $(STACK_ARGS)

test: bootstrap ## the whole suite, then its Redis-touching part on a Redis Cluster
	@$(PYTHON) -m pytest $(ARGS)
ifeq ($(REDIS)$(ARGS),standalone)
	@echo "== the same system on a local Redis Cluster (REDIS=cluster) =="
	@REDIS=cluster $(PYTHON) -m pytest $(CLUSTER_TESTS)
endif

test-cluster: bootstrap ## the e2e and Redis-touching integration tests on a local Redis Cluster
	@REDIS=cluster $(PYTHON) -m pytest $(CLUSTER_TESTS) $(ARGS)

test-image: bootstrap ## build the Dockerfile's image and run its containers (podman, as root)
	@scripts/test-image.sh

lint: ## ruff, mypy, and actionlint + zizmor on the GitHub workflow
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy $(MYPY_TARGETS)
	.venv/bin/actionlint
	.venv/bin/zizmor --offline --persona=auditor --no-progress .github/workflows

# One universal lock per requirements file (every platform, Python 3.11+): CI and the dev
# virtualenv install requirements-dev.lock; the image and the Lambda archives requirements.lock.
# make lock LOCK_ARGS=--upgrade moves every pin to the newest allowed version.
LOCK_ARGS ?=
LOCK = .venv/bin/uv pip compile --universal --python-version 3.11 --generate-hashes --quiet \
	--custom-compile-command "make lock"
lock: ## refresh requirements.lock and requirements-dev.lock from requirements*.txt
	$(LOCK) $(LOCK_ARGS) requirements.txt -o requirements.lock
	$(LOCK) $(LOCK_ARGS) requirements-dev.txt -c requirements.lock -o requirements-dev.lock

bench: bootstrap ## the project's benchmark
	$(PYTHON) -m bench

# Deploy to AWS with the Pulumi CLI (docs/deploy.md): STACK names the stack (default: the
# selected one), IMAGE the image to roll out (default: the one deployed last).
STACK ?=
IMAGE ?=
URL ?=
OPS = $(PYTHON) -m infra.ops
deploy: bootstrap ## build the Lambda archives and pulumi up (STACK=..., IMAGE=...)
	@$(OPS) deploy $(if $(STACK),--stack "$(STACK)") $(if $(IMAGE),--image "$(IMAGE)")

destroy: ## lift the database's deletion protection and pulumi destroy; safe to run again
	@$(OPS) destroy $(if $(STACK),--stack "$(STACK)")

smoke: ## two clients join, chat and read history through URL (make smoke URL=http://...)
	@$(PYTHON) -m infra.smoke "$(URL)"

up: ## the same system in docker (compose.yaml)
	docker compose up -d --build

down: ## stop the docker system
	docker compose down
