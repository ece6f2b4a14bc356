#!/usr/bin/env bash
# `npm run demo`: installs what is missing and builds, then shows the main job end to end on this
# machine (scripts/demo.ts says what it does; `npm run demo -- --image project` skips debootstrap).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh demo
exec npx tsx scripts/demo.ts "$@"
