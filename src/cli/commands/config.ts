import { Command } from 'commander'
import { stringify } from 'smol-toml'
import { DEFAULTS, loadConfig } from '../../daemon/config.js'
import { printJson, writeStdout } from '../output.js'

const snake = (s: string): string => s.replace(/[A-Z]/g, c => `_${c.toLowerCase()}`)

/** The configuration with the file's key names (snake_case), tables as they are written. */
function asFileKeys (value: unknown): unknown {
  if (value == null || typeof value !== 'object' || Array.isArray(value)) return value
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [snake(k), asFileKeys(v)]))
}

export function configCommand (): Command {
  const config = new Command('config').description('the daemon\'s configuration')
  config.command('show')
    .description('print the effective configuration: every setting, the file\'s values merged over the defaults (TOML, as the file is written)')
    .option('--config <file>', `TOML configuration (default ${DEFAULTS.config}, if present)`)
    .option('--json', 'JSON, with the same key names')
    .action(async (flags: { config?: string, json?: boolean }) => {
      const effective = asFileKeys({ ...await loadConfig(flags.config), config: flags.config ?? DEFAULTS.config }) as Record<string, unknown>
      if (flags.json === true) await printJson(effective)
      else await writeStdout(`${stringify(effective)}\n`)
    })
  return config
}
