#!/usr/bin/env bash
# Starts convcg on N MPI ranks of this machine: scripts/mpirun.sh N [ARGS...]
#   scripts/mpirun.sh 2 train --distributed --out runs/dist
# runs `convcg ARGS...` under mpirun with the options a container or a small machine needs:
# --allow-run-as-root when run as root (Docker-like environments), --oversubscribe when N
# exceeds the cores. Each rank is bound to its cores, so `[train] threads = 0` gives it its own.
# The binary is $CONVCG_BIN, else target/release/convcg, built with the mpi feature when missing
# (cargo build --release --features mpi; needs libopenmpi-dev, libclang-dev and openmpi-bin).
set -euo pipefail
if [[ $# -lt 1 || ! $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 N [ARGS...] (e.g. $0 2 train --distributed --out runs/dist)" >&2
  exit 2
fi
ranks=$1
shift
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${CONVCG_BIN:-$root/target/release/convcg}"
if [[ ! -x $bin ]]; then
  echo "building $bin with the mpi feature" >&2
  (cd "$root" && cargo build --release --features mpi --bin convcg)
fi
if ! command -v mpirun >/dev/null; then
  echo "mpirun not found: install an MPI (Debian: apt-get install openmpi-bin libopenmpi-dev)" >&2
  exit 1
fi
opts=()
if [[ $(id -u) -eq 0 ]]; then
  opts+=(--allow-run-as-root)
fi
if (( ranks > $(nproc) )); then
  opts+=(--oversubscribe)
fi
exec mpirun "${opts[@]}" -np "$ranks" "$bin" "$@"
