#!/usr/bin/env bash
# The demo: a local InfluxDB and the sample target on loopback, then a viral x10
# storm from two real Gatling injectors (one per region label) against it, with
# live metrics streaming into InfluxDB, ending in a report.
set -euo pipefail
SPIKE=${SPIKE:-spike}
PORT=${PORT:-8080}
INFLUX_PORT=${INFLUX_PORT:-8086}
INFLUX_RPC_PORT=${INFLUX_RPC_PORT:-8088}

"$SPIKE" stack up --port "$INFLUX_PORT" --rpc-port "$INFLUX_RPC_PORT"

"$SPIKE" target serve --port "$PORT" &
target_pid=$!
cleanup() {
  kill "$target_pid" 2>/dev/null || true
  wait "$target_pid" 2>/dev/null || true
  # the data stays in spike's state directory; `spike stack up` brings it back to look at
  "$SPIKE" stack down || true
}
trap cleanup EXIT
PYTHON=${PYTHON:-$(dirname "$SPIKE")/python}
"$PYTHON" - "$PORT" <<'PY'
import sys, time, urllib.request
for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=1)
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("demo: the sample target did not come up")
PY

set +e
"$SPIKE" run --profile viral-x10 --regions eu-west-2,us-east-1 --provider local \
  --target "http://127.0.0.1:$PORT" --influx-url "http://127.0.0.1:$INFLUX_PORT"
status=$?
set -e
case $status in
  0) echo "demo: the sample target held the storm (SLOs passed)";;
  1) echo "demo: the storm broke the sample target's SLOs, as designed (exit 1); see the report above";;
  *) echo "demo: spike failed with exit code $status"; exit "$status";;
esac
