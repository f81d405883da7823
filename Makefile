# spike: `make demo` and `make test` do all the set-up on a fresh machine.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PORT    ?= 8080
INFLUX_PORT ?= 8086
# The tiers mostly wait (on Gatling runs, Terraform, timeouts, servers), so three workers share a
# 2-core machine; each test file stays whole on one worker, and the lab tier's files are one group
# that starts first (tests/conftest.py, --dist loadgroup).
TEST_WORKERS ?= 3

.PHONY: deps system-deps python-deps gatling-deps toxiproxy checkov demo test test-unit test-integration lint bench clean

deps: system-deps python-deps gatling-deps toxiproxy checkov

# Java and Maven come with this kind of machine; install them where they are missing.
# InfluxDB 1.6.7 (`spike stack`, the v1 tests) and VictoriaMetrics (the v2-write tests) come from
# Debian. On a machine with systemd the packages start their own services (:8086/:8088, :8428);
# spike runs its own instances, so only the services this install started are stopped and disabled
# again, the packaged influxd by its pid file as a last resort (in containers policy-rc.d starts
# nothing and these commands fail harmlessly).
system-deps:
	@command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless maven)
	@command -v influxd >/dev/null 2>&1 && command -v victoria-metrics >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq influxdb victoria-metrics && \
	   for svc in influxdb victoria-metrics; do \
	     systemctl disable --now $$svc >/dev/null 2>&1 || true; \
	     service $$svc stop >/dev/null 2>&1 || true; \
	   done; \
	   if [ -f /var/run/influxdb/influxd.pid ] && kill -0 "$$(cat /var/run/influxdb/influxd.pid)" 2>/dev/null; then \
	     kill "$$(cat /var/run/influxdb/influxd.pid)" || true; \
	   fi)
	@# sshd runs the loopback SSH test hosts (127.0.0.2, ...) of the static-provider tests; the
	@# packaged service is stopped again: spike's tests start their own unprivileged-port instances.
	@test -x /usr/sbin/sshd || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client && \
	   (systemctl disable --now ssh >/dev/null 2>&1 || service ssh stop >/dev/null 2>&1 || true))

python-deps: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Downloads Gatling 3.11.5 from Maven Central once and compiles the built-in
# scenarios into spike's build cache, so runs start in seconds.
gatling-deps: python-deps system-deps
	$(BIN)/spike build --profile viral-x10 --profile smoke

# toxiproxy puts each lab region's latency between its injectors and the target
# (loadorch/lab/latency.py). Pinned: v2.12.0 is the newest release the Go module proxy serves here.
# Built once into .tools/bin/toxiproxy-server; skipped when that version is already there.
TOXIPROXY_VERSION ?= v2.12.0

toxiproxy:
	@scripts/build-toxiproxy.sh $(TOXIPROXY_VERSION) $(CURDIR)/.tools/bin

# checkov (Terraform static analysis, the security-scan test) lives in a virtualenv of its own:
# it pins boto3 and packaging to old versions that spike itself must not be tested against.
CHECKOV_VERSION ?= 3.3.30
CHECKOV := .tools/checkov/bin/checkov
checkov: $(CHECKOV)

$(CHECKOV):
	$(PY) -m venv .tools/checkov
	.tools/checkov/bin/pip install -q --upgrade pip
	.tools/checkov/bin/pip install -q 'checkov==$(CHECKOV_VERSION)'


demo: deps
	PORT=$(PORT) INFLUX_PORT=$(INFLUX_PORT) SPIKE=$(BIN)/spike scripts/demo.sh

test: deps lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --durations=30

test-unit: python-deps
	$(BIN)/pytest tests/unit

test-integration: deps
	$(BIN)/pytest tests/integration

lint: python-deps
	$(BIN)/ruff check loadorch tests bench
	$(BIN)/ruff format --check loadorch tests bench
	$(BIN)/mypy

bench: deps
	$(BIN)/python bench/bench_fidelity.py
	$(BIN)/python bench/bench_overhead.py
	$(BIN)/python bench/bench_analysis.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache gatling/target
