import { Command } from 'commander'
import { parseIpfsRef } from '../../ipfs/index.js'
import { createLogger, type LogLevel } from '../../logging.js'
import { IPFS_NAME_PREFIX, credentialLine, isValidName, isValidTag } from '../../mirror/index.js'
import { UsageError } from '../errors.js'
import { logLevelOption } from '../options.js'
import { printJson, writeStdout } from '../output.js'
import { openCommandRepo } from '../repo.js'

/** `NAME[:TAG]` → its parts (`latest` when no tag), checked against the registry grammar. */
export function parseNameTag (value: string): { name: string, tag: string } {
  const slash = value.lastIndexOf('/')
  const colon = value.lastIndexOf(':')
  const [name, tag] = colon > slash ? [value.slice(0, colon), value.slice(colon + 1)] : [value, 'latest']
  if (!isValidName(name)) throw new UsageError(`${JSON.stringify(name)} is not a repository name (lowercase letters, digits, separators . _ __ -, path components split by /)`)
  if (name.startsWith(IPFS_NAME_PREFIX)) throw new UsageError(`names under ${IPFS_NAME_PREFIX} are the CIDs themselves: pick another name`)
  if (!isValidTag(tag)) throw new UsageError(`${JSON.stringify(tag)} is not a tag (letters, digits, _ . -, at most 128, not starting with . or -)`)
  return { name, tag }
}

export function tagCommand (): Command {
  return new Command('tag')
    .description('give an image in the repo a friendly name, which the mirror serves as /v2/NAME/manifests/TAG (image ls shows it)')
    .argument('[cid]', 'image root CID (ipfs://CID, /ipfs/CID or CID); with --delete, leave it out')
    .argument('<name:tag>', 'NAME[:TAG] (TAG defaults to latest)')
    .option('--delete', 'remove the name instead')
    .option('--repo <dir>', 'repo (or daemon root)')
    .addOption(logLevelOption())
    .action(async (a: string | undefined, b: string | undefined, flags: { delete?: boolean, repo?: string, logLevel: LogLevel }) => {
      const [ref, nameTag] = b == null ? [undefined, a as string] : [a, b]
      if (flags.delete === true && ref != null) throw new UsageError('tag --delete takes only NAME:TAG')
      if (flags.delete !== true && ref == null) throw new UsageError('tag takes CID NAME:TAG')
      const { name, tag } = parseNameTag(nameTag)
      const root = ref != null ? parseIpfsRef(ref).toString() : undefined
      const repo = await openCommandRepo(flags.repo, createLogger(flags.logLevel), { create: true }) // writes the index
      try {
        if (root == null) {
          if (!repo.index.tags.delete(name, tag)) throw new UsageError(`${name}:${tag} names no image`)
          await printJson({ name, tag, deleted: true })
        } else {
          repo.index.tags.set(name, tag, root)
          await printJson({ name, tag, root })
        }
      } finally {
        await repo.close()
      }
    })
}

async function readStdinLine (): Promise<string> {
  let text = ''
  for await (const chunk of process.stdin) {
    text += (chunk as Buffer).toString('utf8')
    if (text.includes('\n') || text.length > 4096) break
  }
  return text.split('\n')[0].replace(/\r$/, '')
}

export function mirrorCommand (): Command {
  return new Command('mirror')
    .description('helpers for mirror mode ([mirror] in the daemon configuration)')
    .addCommand(new Command('passwd')
      .description('print a credentials line for [mirror] credentials: USER and the password read from the first line of stdin, scrypt-hashed')
      .argument('<user>', 'user name')
      .action(async (user: string) => {
        const password = await readStdinLine()
        if (password === '') throw new UsageError('no password on stdin')
        await writeStdout(`${await credentialLine(user, password)}\n`)
      }))
}
