# The verbs people and CI use; `make help` lists them.
SHELL := /bin/bash
PYTHON := .venv/bin/python
GATEWAYS ?= 2
FUNCTION_HOSTS ?= 1
# Extra pytest options: make test ARGS="-m integration -x"
ARGS ?=
STACK := $(PYTHON) -m devstack
STACK_ARGS = --gateways $(GATEWAYS) --function-hosts $(FUNCTION_HOSTS)
MYPY_TARGETS ?= $(wildcard chat devstack functions realtime infra bench scripts/*.py)

.DEFAULT_GOAL := help
.PHONY: help bootstrap dev dev-start dev-stop dev-status test test-image lint bench up down

help: ## list the verbs
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-11s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

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

test: bootstrap ## run the whole test suite; it starts the services it needs
	@$(PYTHON) -m pytest $(ARGS)

test-image: bootstrap ## build the Dockerfile's image and run its containers (podman, as root)
	@scripts/test-image.sh

lint: ## ruff and mypy
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy $(MYPY_TARGETS)

bench: bootstrap ## the project's benchmark
	$(PYTHON) -m bench

up: ## the same system in docker (compose.yaml)
	docker compose up -d --build

down: ## stop the docker system
	docker compose down
