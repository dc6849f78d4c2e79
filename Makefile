# The two set-up commands of the README: `make demo` (main job) and `make test` (the test suite).
# Both install what is missing first (scripts/install.sh is idempotent).
PY := .venv/bin/python

.PHONY: install demo test

install:
	bash scripts/install.sh

demo: install
	.venv/bin/emoslm demo $(DEMO_ARGS)

test: install
	$(PY) -m pytest -q
