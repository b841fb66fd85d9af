# The only commands a newcomer needs. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup test lint typecheck pytest bench soak demo dist clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "alc needs Python 3.11 or newer"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[gpio,osdp,test]"
	@# mosquitto is the broker of the integration tests and the demo.
	@# mosquitto_pub (mosquitto-clients) drives the running demo by hand.
	{ command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto; } && command -v mosquitto_pub >/dev/null || \
		{ $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients; }
	@# Debian's chromium is the browser of the kiosk tests (Playwright drives it;
	@# Playwright's own browser download is not used). Without it they skip.
	test -x /usr/bin/chromium || \
		{ $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
		echo "chromium could not be installed: the kiosk browser tests will skip"
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy --strict firmware hal sim tools

pytest: setup
	$(BIN)/pytest -m "not slow"

test: lint typecheck pytest

bench: setup
	$(BIN)/alc bench decide --members 500000
	$(BIN)/alc bench decide --members 1000000
	$(BIN)/alc bench sync --members 100000 --deltas 10000 --rate 100
	$(BIN)/alc bench events --events 100000

soak: setup
	$(BIN)/pytest -m slow

demo: setup
	$(BIN)/alc demo

# The release: the sdist, the wheel and deploy/install.sh beside it, which is
# all a Pi needs (docs/install.md). build/ goes first: setuptools would pack a
# module deleted since the last build from it.
dist: setup
	rm -rf build dist
	$(BIN)/python -m build --outdir dist .
	cp deploy/install.sh dist/

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist
