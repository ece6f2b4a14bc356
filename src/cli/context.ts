import { AsyncLocalStorage } from 'node:async_hooks'
import type { OpenRepo } from './repo.js'

/**
 * Where a command runs. In a plain CLI process: stdout/stderr and a repo the command opens
 * itself. Inside the daemon (a command forwarded over the control API): the caller's streams and
 * the daemon's own open repo, which the command must not close.
 */
export interface CommandContext {
  stdout: (data: Uint8Array | string) => Promise<void>
  stderr: (text: string) => void
  /** The daemon's repo, when the command runs inside the daemon. */
  repo?: OpenRepo
}

export const commandContext = new AsyncLocalStorage<CommandContext>()
