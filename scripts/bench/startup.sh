#!/usr/bin/env bash
# `npm run bench:startup` (as root): builds the CLI and the Debian fixture image if needed, stands
# up the reference stack whose rows it prints beside ours, then runs scripts/bench/startup.ts (--runs N).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash scripts/setup.sh test
bash scripts/refstack.sh
exec npx tsx scripts/bench/startup.ts "$@"
