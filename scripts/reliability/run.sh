#!/usr/bin/env bash
# `npm run test:reliability` (as root, with /dev/fuse): the reliability campaign's full set, then
# its figures written into docs/reliability.md. RELIABILITY_SOAK_SEC sets the soak's length
# (600 by default), RELIABILITY_CASES overrides every case count, RELIABILITY_SEED replays a run.
# Arguments go to vitest (e.g. one file); the figures table is rewritten from what ran.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash scripts/setup.sh test
results="$(mktemp -t reliability-XXXXXX.jsonl)"
trap 'rm -f "$results"' EXIT
start=$(date -u +%s)
status=0
RELIABILITY_FULL=1 RELIABILITY_RESULTS="$results" npx vitest run --config vitest.reliability.config.ts "$@" || status=$?
npx tsx scripts/reliability/report.ts "$results" docs/reliability.md "$(( $(date -u +%s) - start ))" "$status"
exit "$status"
