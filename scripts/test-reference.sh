#!/usr/bin/env bash
# `npm run test:reference` (as root): installs what is missing, stands up the reference stack,
# then runs the tests that compare with it (test/reference/). A missing stack fails them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh test
bash scripts/refstack.sh
exec npx vitest run --config vitest.reference.config.ts "$@"
