#!/usr/bin/env node
// The compiled CLI; `npm run build` (run by scripts/setup.sh) produces dist/.
import '../dist/cli/main.js'
