/**
 * Commands that use the repo and so run in the daemon that owns it, when one does: the CLI sends
 * the command line to the daemon's control socket instead of opening the repo itself.
 */
export const FORWARDED_COMMANDS: ReadonlySet<string> = new Set(['push', 'optimize', 'image', 'pull', 'id', 'tag', 'peers', 'stats', 'export', 'import', 'pin', 'gc'])
