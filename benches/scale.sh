#!/usr/bin/env bash
# The scale benchmark (see BENCHMARKS.md): generates a day of each row count given
# (default 1M and 10M usage rows, ~100k accounts in 10k organizations), then times
# `orgsettle daily` on 2 threads, DuckDB's bare group-by of the same usage.csv and
# `orgsettle daily` on 1 thread, in rotation, 5 runs each. Installs DuckDB from PyPI into a venv under target/.
#   benches/scale.sh                 # 1M and 10M rows
#   benches/scale.sh 1000000         # only 1M
#   RUNS=3 benches/scale.sh 200000   # quicker
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
venv=target/bench-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -c "import duckdb" 2>/dev/null || "$venv/bin/pip" install --quiet duckdb
exec "$venv/bin/python" benches/scale.py "$@"
