#!/usr/bin/env bash
# Fuzz orgsettle's parsers for SECONDS seconds per target (default 60).
#
# With the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`), runs the
# libFuzzer targets in fuzz_targets/ over the committed corpus in corpus/, which
# grows with what they find. Without them, runs the proptest fuzz tests
# (tests/fuzz.rs) over and over with many cases until the time is used.
set -euo pipefail
seconds="${1:-60}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

if cargo +nightly fuzz --version >/dev/null 2>&1; then
  for target in csv_rows numbers snapshot; do
    echo "== cargo fuzz: $target for ${seconds}s"
    cargo +nightly fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048
  done
else
  echo "cargo-fuzz or the nightly toolchain is missing: running the proptest fuzz tests instead"
  cd ..
  end=$(( $(date +%s) + seconds * 3 ))
  rounds=0
  while [ "$(date +%s)" -lt "$end" ]; do
    PROPTEST_CASES=5000 cargo test --release --quiet --test integration fuzz_ >/dev/null
    rounds=$((rounds + 1))
  done
  echo "ran $rounds rounds of 4 x 5000 proptest cases without a failure"
fi
