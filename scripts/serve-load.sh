#!/usr/bin/env bash
# The serving load test of docs/performance.md: trains (once) a run with 1,000,000 pins
# (configs/serve-1m.toml), serves it with the exact and the HNSW index in turn on loopback,
# and drives each with examples/loadgen: closed loops of 1, 4 and 16 clients, then open loops
# at fixed rates. Usage: scripts/serve-load.sh [RUN_DIR] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/serve-1m}
SECONDS_EACH=${2:-15}
PORT=18080
cargo build --release --bin convcg --example loadgen
BIN=target/release/convcg
LOAD=target/release/examples/loadgen
if [ ! -f "$RUN/model.ckpt" ]; then
  $BIN train --quiet --config configs/serve-1m.toml --out "$RUN"
fi
# The users to ask for: every user of the run's table (synthetic ids from 1,000,000).
USERS="$RUN/loadgen-users.txt"
python3 -c "print('\n'.join(str(1_000_000 + i) for i in range(50_000)))" > "$USERS"
grep -m1 "model name" /proc/cpuinfo
for index in exact hnsw; do
  $BIN serve "$RUN" --addr 127.0.0.1:$PORT --index "$index" > "$RUN/serve-$index.out" 2> "$RUN/serve-$index.err" &
  PID=$!
  trap 'kill $PID 2>/dev/null || true' EXIT
  until grep -q listening "$RUN/serve-$index.out" 2>/dev/null; do
    kill -0 $PID || { cat "$RUN/serve-$index.err"; exit 1; }
    sleep 1
  done
  echo "== $index index"
  for clients in 1 4 16; do
    $LOAD --url http://127.0.0.1:$PORT --users "$USERS" --clients $clients --seconds "$SECONDS_EACH"
  done
  case $index in
    exact) rates="50 100 200" ;;
    hnsw) rates="500 1000 2000" ;;
  esac
  for rate in $rates; do
    $LOAD --url http://127.0.0.1:$PORT --users "$USERS" --clients 32 --rate "$rate" --seconds "$SECONDS_EACH"
  done
  kill $PID; wait $PID || true
done
