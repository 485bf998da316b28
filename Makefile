# stkit: the two commands of the README, plus helpers.
#   make report   run the notebooks (quick size, synthetic data) -> reports/index.html
#   make test     the test suite, including papermill smoke runs of every notebook
# Both create the virtual environment .venv on first use (pinned by constraints.txt).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stkit-installed
SIZE   ?= quick

.PHONY: report test ops venv clean-reports

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	$(PY) -m ipykernel install --sys-prefix --name stkit --display-name "Python (stkit)"
	touch $@

report: $(STAMP)
	$(PY) -m stkit report --size $(SIZE) --out reports

test: $(STAMP)
	$(PY) -m pytest -ra $(PYTEST_ARGS)

ops: $(STAMP)
	$(PY) -m stkit ops build

clean-reports:
	rm -rf reports
