#!/usr/bin/env bash
# `npm run test:install`: packs the package, installs the tarball with npm into an empty prefix
# and runs the installed command (test/install/). Minutes, so not part of `npm test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh test
exec npx vitest run --config vitest.install.config.ts "$@"
