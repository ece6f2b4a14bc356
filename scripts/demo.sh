#!/usr/bin/env bash
# `npm run demo`: installs what is missing, then shows the main job end to end on local files.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh demo
exec node scripts/demo.mjs "$@"
