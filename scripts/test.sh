#!/usr/bin/env bash
# `npm test`: installs what is missing, builds, then runs the whole test suite (or the test
# files given as arguments). Tests that need root, FUSE or containerd fail under CI=true when
# their prerequisites are missing, and are skipped with a warning otherwise.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh test
echo "test: type-checking sources, tests and scripts" >&2
npx tsc -p tsconfig.json --noEmit
exec npx vitest run "$@"
