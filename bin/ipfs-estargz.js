#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=2
// The compiled CLI; `npm run build` (run by scripts/setup.sh) produces dist/.
// The shebang's settings halve the daemon's memory for the same work (npm run bench:rss: a 2 MiB
// V8 young generation instead of 16, and 2 malloc arenas instead of 8 per core), at no cost
// measured in conversion time. A process cannot set them for itself once started.
import '../dist/cli/entry.js'
