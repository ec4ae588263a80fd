# Two commands do all set-up from nothing: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Run time (`make demo`, `make bench`), then training and tests on top (`make test`).
RUN := $(VENV)/.ready-run
DEV := $(VENV)/.ready-dev

.PHONY: demo test bench clean

demo: $(RUN)
	$(BIN)/camstab demo --seconds 20

test: $(DEV)
	$(BIN)/python -m pytest

bench: $(RUN)
	$(BIN)/camstab bench

$(RUN): requirements-run.txt setup.py package.xml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements-run.txt
	# setup.cfg puts scripts in lib/camstab_ros for `ros2 run`; here they go on the venv PATH.
	$(BIN)/python setup.py -q develop --no-deps --script-dir $(BIN)
	touch $(RUN)

$(DEV): $(RUN) requirements.txt
	$(BIN)/pip install -r requirements.txt
	touch $(DEV)

clean:
	rm -rf $(VENV) build install log out *.egg-info
