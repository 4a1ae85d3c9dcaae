# liverec: `make demo` sets up and runs the demo pipeline; `make test` sets up and runs the tests.
# Everything lives in .venv; scratch files (Spark, Ivy, MLflow, HOME, TMPDIR) stay under .liverec/.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
STAMP  := $(VENV)/.liverec-installed
AIRFLOW_VENV  := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.liverec-installed
FLOWER_VENV  := .venv-flower
FLOWER_STAMP := $(FLOWER_VENV)/.liverec-installed
SCRATCH := $(CURDIR)/.liverec
PETASTORM_DEPS := dill diskcache future psutil pyzmq six fsspec packaging

# tools write caches under HOME and TMPDIR: keep them inside the project's ignored scratch folder
RUN_ENV := HOME=$(SCRATCH)/home TMPDIR=$(SCRATCH)/tmp HF_HOME=$(SCRATCH)/hf HF_HUB_OFFLINE=1 \
	MPLCONFIGDIR=$(SCRATCH)/mpl PATH=$(CURDIR)/$(BIN):$$PATH PYSPARK_PYTHON=$(CURDIR)/$(BIN)/python

.PHONY: setup airflow-setup flower-setup scratch demo serve redis notebook test test-fast lint benchmark clean-scratch

setup: $(STAMP)

$(STAMP): Makefile pyproject.toml requirements/constraints.txt lib/liverec/jars.py
	@command -v java >/dev/null || { echo "Java 17 is required (apt-get install openjdk-17-jre-headless)"; exit 1; }
	# redis-server: the online store's production back end (tests start their own on a free loopback port)
	@command -v redis-server >/dev/null || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q redis-server >/dev/null || { apt-get update -q && apt-get install -y -q redis-server; }; \
		else echo "redis-server is required: sudo apt-get install redis-server"; exit 1; fi; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -c requirements/constraints.txt -e '.[dev,training]'
	# Petastorm 0.13.1 pins setuptools<70, which conflicts with torch: install it alone, without deps
	$(PIP) install -c requirements/constraints.txt $(PETASTORM_DEPS)
	$(PIP) install --no-deps petastorm==0.13.1
	# tests only: the Open Bandit Pipeline as an oracle for liverec.offpolicy (tests/test_offpolicy.py); its
	# releases' declared dependencies do not fit Python 3.11, its estimators need only these beside the pinned stack
	$(PIP) install --no-deps obp==0.4.1 seaborn==0.13.2 mypy_extensions==1.2.0
	# the Delta jar, copied among pyspark's jars (Spark's resolver, else mvn into ~/.m2)
	mkdir -p $(SCRATCH)/tmp
	$(BIN)/python -m liverec.jars
	touch $(STAMP)

# Airflow in a virtual environment of its own, as in production (see requirements/airflow.txt)
airflow-setup: $(AIRFLOW_STAMP)

$(AIRFLOW_STAMP): Makefile requirements/airflow.txt
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install -q --upgrade pip
	$(AIRFLOW_VENV)/bin/python -m pip install -r requirements/airflow.txt
	touch $(AIRFLOW_STAMP)

# Flower (federated training) in a virtual environment of its own (see requirements/flower.txt); torch, pyarrow and
# liverec come from .venv, whose site-packages a .pth file adds after Flower's own
flower-setup: $(FLOWER_STAMP)

$(FLOWER_STAMP): Makefile requirements/flower.txt $(STAMP)
	test -x $(FLOWER_VENV)/bin/python || $(PYTHON) -m venv $(FLOWER_VENV)
	$(FLOWER_VENV)/bin/python -m pip install -q --upgrade pip
	$(FLOWER_VENV)/bin/python -m pip install -q -r requirements/flower.txt
	$(BIN)/python -c "import pathlib, subprocess, sysconfig; dst = subprocess.check_output(['$(FLOWER_VENV)/bin/python', \
		'-c', 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])'], text=True).strip(); \
		pathlib.Path(dst, 'liverec-env.pth').write_text('import site; site.addsitedir(%r)\n' % sysconfig.get_paths()['purelib'])"
	$(FLOWER_VENV)/bin/python -c "import flwr, torch, pyarrow, liverec.federated"
	touch $(FLOWER_STAMP)

scratch:
	@mkdir -p $(SCRATCH)/home $(SCRATCH)/tmp $(SCRATCH)/hf $(SCRATCH)/mpl

demo: setup scratch
	$(RUN_ENV) $(BIN)/liverec pipeline --set demo_mode=true

# serve the demo's online model (after make demo): liverec serve on 127.0.0.1:5001 (SQLite store)
serve: setup scratch
	$(RUN_ENV) $(BIN)/liverec serve --set demo_mode=true

# a local redis-server on 127.0.0.1:6379 (data under .liverec/redis) for online.store=redis://127.0.0.1:6379/0
redis: setup scratch
	@mkdir -p $(SCRATCH)/redis
	redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null || redis-server --bind 127.0.0.1 --port 6379 \
		--dir $(SCRATCH)/redis --daemonize yes --logfile $(SCRATCH)/redis/redis.log

# re-execute notebooks/nightly_report.ipynb on the demo lakehouse (after make demo)
notebook: setup scratch
	$(RUN_ENV) $(BIN)/python notebooks/make_report.py

# two pytest-xdist workers on 2 cores: one test's single-threaded stretches (Spark planning on the driver, MLflow,
# JVM start-up) leave a core idle that the other worker uses; each shared chain (tests/conftest.py) stays on one
# worker. TEST_WORKERS=0 runs the suite in one process
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),-p no:xdist,-n $(TEST_WORKERS) --dist loadgroup)

test: setup airflow-setup flower-setup scratch
	$(RUN_ENV) $(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: setup scratch
	$(RUN_ENV) $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check lib jobs tests benchmarks airflow_dags notebooks

# every benchmark; each writes benchmarks/results/<name>.{json,md} (they take tens of minutes on 2 cores)
benchmark: setup scratch
	$(PIP) install -q -c requirements/constraints.txt -e '.[bench]'
	cd benchmarks && $(RUN_ENV) ../$(BIN)/python ingest_clean_throughput.py
	cd benchmarks && $(RUN_ENV) ../$(BIN)/python ml100k_als.py --with-implicit
	cd benchmarks && $(RUN_ENV) ../$(BIN)/python pipeline_stages.py --dataset both
	cd benchmarks && $(RUN_ENV) ../$(BIN)/python als_blas.py
	cd benchmarks && $(RUN_ENV) ../$(BIN)/python pipeline_stages.py --als-only-events 20000000
	cd benchmarks && $(RUN_ENV) ../$(BIN)/python embeddings_cold_start.py
	cd benchmarks && $(RUN_ENV) ../$(BIN)/python product_ml100k.py
	cd benchmarks && $(RUN_ENV) ../$(BIN)/python mmr_ml100k.py
	cd benchmarks && $(RUN_ENV) ../$(BIN)/python nightly_throughput.py
	cd benchmarks && $(RUN_ENV) ../$(BIN)/python nightly_scale.py --sizes 100k 1m
	cd benchmarks && $(RUN_ENV) ../$(BIN)/python nightly_scale.py --sizes 20m --champion-from 1m --label 20m
	cd benchmarks && $(RUN_ENV) ../$(BIN)/python als_vs_implicit.py
	cd benchmarks && $(RUN_ENV) ../$(BIN)/python ranker_scoring.py
	cd benchmarks && $(RUN_ENV) ../$(BIN)/python online_latency.py --prepare
	cd benchmarks && $(RUN_ENV) ../$(BIN)/python stream_freshness.py

clean-scratch:
	rm -rf .liverec lakehouse demo_data
