#!/usr/bin/env bash
# `npm run bench:bundle`: builds the CLI and the Debian fixture image if needed, then runs
# scripts/bench/bundle.ts (arguments are passed on: --runs N, --level N).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
npx tsc -p tsconfig.build.json
exec npx tsx scripts/bench/bundle.ts "$@"
