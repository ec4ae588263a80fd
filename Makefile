# Two commands do all set-up from nothing: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready

.PHONY: demo test bench clean

demo: $(READY)
	$(BIN)/camstab demo --seconds 20

test: $(READY)
	$(BIN)/python -m pytest

bench: $(READY)
	$(BIN)/camstab bench

$(READY): requirements.txt setup.py package.xml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements.txt
	# setup.cfg puts scripts in lib/camstab_ros for `ros2 run`; here they go on the venv PATH.
	$(BIN)/python setup.py -q develop --no-deps --script-dir $(BIN)
	touch $(READY)

clean:
	rm -rf $(VENV) build install log out *.egg-info
