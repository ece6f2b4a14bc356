import { Command } from 'commander'
import { CID } from 'multiformats/cid'
import { getPin, listPins, parseIpfsRef, pinRoot, unpinRoot, walkDag, collectBlock, PinNotFoundError } from '../../ipfs/index.js'
import { createLogger, type LogLevel } from '../../logging.js'
import { cancelOn } from '../context.js'
import { logLevelOption } from '../options.js'
import { printJson } from '../output.js'
import { openCommandRepo } from '../repo.js'

interface Flags { repo?: string, logLevel: LogLevel, offline?: boolean }

/** `ipfs://CID`, `/ipfs/CID` or a bare CID. */
function cidOf (ref: string): CID {
  return parseIpfsRef(ref)
}

function lsCommand (): Command {
  return new Command('ls')
    .description('list the pins (one JSON line each: cid, type, mode complete|lazy, metadata), or the pin of one CID')
    .argument('[cid]', 'only this CID (ERR_PIN_NOT_FOUND when it has no pin)')
    .option('--repo <dir>', 'repo of the node')
    .addOption(logLevelOption())
    .action(async (ref: string | undefined, flags: Flags) => {
      const repo = await openCommandRepo(flags.repo, createLogger(flags.logLevel))
      try {
        const components = { pins: repo.index.pins, localBlockstore: repo.node.localBlockstore }
        if (ref != null) {
          const cid = cidOf(ref)
          const pin = await getPin(components, cid)
          if (pin == null) throw new PinNotFoundError(cid.toString())
          await printJson(pin)
          return
        }
        for await (const pin of listPins(components)) await printJson(pin)
      } finally {
        await repo.close()
      }
    })
}

function addCommand (): Command {
  return new Command('add')
    .description('pin a DAG recursively: its blocks are fetched (from peers, unless --offline) and kept from garbage collection')
    .argument('<cid>', 'root CID (ipfs://CID, /ipfs/CID or CID)')
    .option('--repo <dir>', 'repo of the node')
    .option('--offline', 'only use blocks already in the repo (ERR_BLOCK_NOT_FOUND names the first missing one)')
    .addOption(logLevelOption())
    .action(async (ref: string, flags: Flags) => {
      const repo = await openCommandRepo(flags.repo, createLogger(flags.logLevel))
      const ac = new AbortController()
      const stopListening = cancelOn(ac)
      try {
        const cid = cidOf(ref)
        // every block stored first (fetched when missing), then pinned from the local store
        let blocks = 0
        for await (const _ of walkDag(cid, async (c, signal) => await collectBlock(repo.node.blocks.get(c, { signal, offline: flags.offline === true })), { signal: ac.signal })) blocks++
        await repo.node.flush()
        const added = await pinRoot({ pins: repo.index.pins, localBlockstore: repo.node.localBlockstore }, cid, { signal: ac.signal })
        await printJson({ cid: cid.toString(), blocks, added })
      } finally {
        stopListening()
        await repo.close()
      }
    })
}

function rmCommand (): Command {
  return new Command('rm')
    .description('remove a pin; its blocks stay until `gc` (an image listed by `image ls` is removed with `image rm`)')
    .argument('<cid>', 'pinned CID (ipfs://CID, /ipfs/CID or CID)')
    .option('--repo <dir>', 'repo of the node')
    .addOption(logLevelOption())
    .action(async (ref: string, flags: Flags) => {
      const repo = await openCommandRepo(flags.repo, createLogger(flags.logLevel))
      try {
        const cid = cidOf(ref)
        await unpinRoot({ pins: repo.index.pins, localBlockstore: repo.node.localBlockstore }, cid)
        await printJson({ cid: cid.toString(), removed: true })
      } finally {
        await repo.close()
      }
    })
}

export function pinCommand (): Command {
  return new Command('pin')
    .description('list, add and remove pins: pinned blocks are never garbage-collected (pushed, pulled, imported and mounted images are pinned)')
    .addCommand(lsCommand())
    .addCommand(addCommand())
    .addCommand(rmCommand())
}
