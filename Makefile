# Quick start: `make demo` and `make test` (both set everything up first).
PY := .venv/bin/python
FIXTURES_DIR ?= $(abspath ../shared/fixtures)
export FIXTURES_DIR

.PHONY: setup demo test lint lock clean

setup:
	@bash tools/setup.sh

demo: setup
	$(PY) tools/demo.py --out runs/demo

# The linter runs first: a finding fails `make test`.
lint: setup
	@$(PY) -m ruff check .

# pytest exits 5 when it collected nothing: a run that tests nothing is a failure.
test: setup lint
	@$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$status

# Re-resolve requirements.txt from requirements.in on CPython 3.10.
lock: setup
	rm -rf .lock-venv && $(PY) -c "import sys; print(sys.executable)" >/dev/null
	$$(readlink -f $(PY)) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -r requirements.in
	{ head -n 2 requirements.txt; .lock-venv/bin/pip freeze --exclude-editable; } > requirements.txt.new
	mv requirements.txt.new requirements.txt && rm -rf .lock-venv

clean:
	rm -rf .venv runs
