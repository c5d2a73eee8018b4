#!/usr/bin/env bash
# W1 beside its PyTorch peer, interleaved: the comparison docs/performance.md reports.
#
#   scripts/w1-vs-torch.sh [ROUNDS]          # default 5 rounds
#
# Each round runs the peer (`shared/peers/run.sh w1_torch_train_step.py`: eager PyTorch with
# tcmalloc) and the criterion benchmark `w1/train_step`, in alternating order (peer first in odd
# rounds, convcg first in even ones), so that a drift of the host's speed within a round falls on
# both sides alike. It prints one line per round and then the medians: each side's examples/s,
# the ratio of the medians, and the median of the per-round ratios.
#
# Environment:
#   CONVCG_SHARED   the shared folder (default: `shared` beside the repository)
#   W1_COMPILE=1    also run the peer with --compile in each round; a round's ratio is then
#                   taken against the faster of eager and --compile
#   W1_MEASURE=S    criterion's measurement time in seconds (default 5; warm-up 2)
#   W1_BENCH=PATH   a benchmark binary built earlier (default: build this checkout's)
#   W1_TSV=PATH     also write the rounds as tab-separated values there
#   W1_BF16=1       bf16 against bf16: the benchmark with CONVCG_PRECISION=bf16
#                   (`w1/train_step_bf16`, AMX products) and the peer with --bf16 (autocast)
#
# Needs the peers' venv once: `bash "$CONVCG_SHARED/peers/setup.sh"`.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds="${1:-5}"
case "$rounds" in
  '' | *[!0-9]* | 0) echo "w1-vs-torch: ROUNDS must be a positive whole number, not '$rounds'" >&2; exit 2 ;;
esac
shared="${CONVCG_SHARED:-$(cd .. && pwd)/shared}"
peer="$shared/peers/run.sh"
[ -f "$peer" ] || { echo "w1-vs-torch: no peer runner at $peer (set CONVCG_SHARED)" >&2; exit 1; }
measure="${W1_MEASURE:-5}"

bench="${W1_BENCH:-}"
if [ -z "$bench" ]; then
  echo "building the w1 benchmark ..." >&2
  bench=$(cargo bench --bench w1 --no-run --message-format=json 2>/dev/null \
    | grep '"name":"w1"' | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
  [ -x "$bench" ] || { echo "w1-vs-torch: could not build the w1 benchmark" >&2; exit 1; }
fi

bench_id=w1/train_step
peer_flags=()
if [ "${W1_BF16:-0}" = 1 ]; then
  bench_id=w1/train_step_bf16
  peer_flags=(--bf16)
  export CONVCG_PRECISION=bf16
fi

# The peer's examples/s from its JSON line; empty if it printed none.
peer_rate() {
  bash "$peer" w1_torch_train_step.py "${peer_flags[@]}" "$@" 2>/dev/null \
    | grep -o '"examples_per_s": *[0-9.]*' | tail -1 | grep -o '[0-9.]*$' || true
}

# Criterion's middle throughput estimate in examples/s (it prints elem/s, Kelem/s or Melem/s).
convcg_rate() {
  "$bench" --bench "$bench_id" --warm-up-time 2 --measurement-time "$measure" --noplot 2>/dev/null \
    | awk '/thrpt:/ { v = $4; u = $5; gsub(/\[/, "", v)
             m = (u ~ /^Kelem/) ? 1e3 : (u ~ /^Melem/) ? 1e6 : 1
             printf "%.0f\n", v * m; exit }' || true
}

# The peer's figures of one round: eager, and --compile when asked.
run_peer() {
  eager=$(peer_rate)
  if [ "${W1_COMPILE:-0}" = 1 ]; then compiled=$(peer_rate --compile); fi
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

tsv="${W1_TSV:-}"
rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
printf '%-6s %-12s %12s %12s %12s %7s\n' round time torch_eager torch_compile convcg ratio
for ((r = 1; r <= rounds; r++)); do
  eager="" compiled="" ours=""
  if ((r % 2)); then run_peer; ours=$(convcg_rate); else ours=$(convcg_rate); run_peer; fi
  if [ -z "$eager" ] || [ -z "$ours" ]; then
    echo "w1-vs-torch: round $r gave no figure (peer '${eager}', convcg '${ours}'); is the peers' venv set up?" >&2
    exit 1
  fi
  best=$(awk -v e="$eager" -v c="${compiled:-0}" 'BEGIN { print (c > e) ? c : e }')
  ratio=$(awk -v o="$ours" -v b="$best" 'BEGIN { printf "%.3f", o / b }')
  printf '%-6s %-12s %12.0f %12s %12.0f %7s\n' "$r" "$(date -u +%H:%M:%S)" "$eager" "${compiled:--}" "$ours" "$ratio"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$eager" "${compiled:-}" "$best" "$ours" "$ratio" >>"$rows"
done

torch_median=$(cut -f4 "$rows" | median)
convcg_median=$(cut -f5 "$rows" | median)
ratio_median=$(cut -f6 "$rows" | median)
awk -v t="$torch_median" -v c="$convcg_median" -v r="$ratio_median" -v n="$rounds" 'BEGIN {
  printf "medians of %d rounds: PyTorch %.0f examples/s, convcg %.0f: ratio of medians %.3fx, median of the ratios %.3fx\n", n, t, c, c / t, r }'
if [ -n "$tsv" ]; then
  { printf 'round\ttorch_eager\ttorch_compile\ttorch_best\tconvcg\tratio\n'; cat "$rows"; } >"$tsv.tmp"
  mv "$tsv.tmp" "$tsv"
fi
