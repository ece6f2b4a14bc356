#!/usr/bin/env bash
# `npm run bench:mirror`: builds the CLI, then runs scripts/bench/mirror.ts (needs root,
# containerd, docker-registry; arguments are passed on: --runs N).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
npx tsc -p tsconfig.build.json
exec npx tsx scripts/bench/mirror.ts "$@"
