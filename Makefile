# socialnet-ops: the two set-up commands are `make demo` and `make test`.
SHELL := /bin/bash
UV ?= uv
PYTEST_ARGS ?= -n 3 --dist loadfile

.PHONY: install lint typecheck test test-unit test-integration demo up down status bench clean

install:
	@infrastructure/bootstrap/install-tools.sh

lint: install
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run lint-imports

typecheck: install
	$(UV) run mypy socialnet_ops flows tasks app webhooks

test: install lint typecheck
	$(UV) run pytest $(PYTEST_ARGS)

test-unit: install
	$(UV) run pytest -m unit $(PYTEST_ARGS)

test-integration: install
	$(UV) run pytest -m "integration or e2e" $(PYTEST_ARGS)

demo: install
	$(UV) run socialnet-ops demo

up: install
	$(UV) run socialnet-ops up

down:
	$(UV) run socialnet-ops down

status:
	$(UV) run socialnet-ops status

bench: install
	@for b in benchmarks/*.py; do echo "== $$b"; $(UV) run python $$b | tail -n 1; done

clean: down
	rm -rf .local
