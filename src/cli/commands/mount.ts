import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises'
import { basename, dirname, isAbsolute, join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { Command } from 'commander'
import { TOC_DIGEST_ANNOTATION } from '../../estargz/index.js'
import { inheritedLabels } from '../../wire/index.js'
import { ChunkCache, LayerMounter, MountManager, lazyUnmount } from '../../fs/index.js'
import { DEFAULTS as DAEMON_DEFAULTS, loadConfig, nodeOptionsFor } from '../../daemon/index.js'
import { IpfsImageReader, REPO_DEFAULTS, parseIpfsRef, pinRoot, resolveRepoPath } from '../../ipfs/index.js'
import { createLogger, type LogLevel } from '../../logging.js'
import { hostPlatform, parsePlatform, resolveImages } from '../../oci/index.js'
import { IpfsSource, ReadaheadSource } from '../../source/index.js'
import { MountOpenTimeoutError, UmountTimeoutError, UsageError, noPeerHasCid, parseNonNegativeInt, requireRoot } from '../errors.js'
import { DEFAULTS, collect, logLevelOption } from '../options.js'
import { openCommandRepo } from '../repo.js'

const run = promisify(execFile)

/** Options of the mount users see. */
const USER_MOUNT_OPTIONS = 'ro,nosuid,nodev'

interface MountFlags {
  repo?: string
  config?: string
  openTimeout?: number
  layer?: number
  platform?: string
  peer: string[]
  prefetch: boolean
  backgroundFetch: boolean
  logLevel: LogLevel
}

/** A mountpoint's key: its state folder's and its pointer's name. */
function mountKey (mountpoint: string): string {
  return createHash('sha256').update(resolve(mountpoint)).digest('hex').slice(0, 16)
}

/** Per-mountpoint state under the repo: the layer mountpoints and the pid of the mount process. */
function stateDir (repo: string, mountpoint: string): string {
  return join(repo, 'mounts', mountKey(mountpoint))
}

/**
 * A symlink from the mountpoint's key to its state folder, outside any repo, so `umount DIR`
 * finds the mount whatever repo it was made from. Best effort: without it (no /run, not
 * root), `umount` needs the mount's `--repo`.
 */
function pointerOf (mountpoint: string): string {
  return join(DEFAULTS.mountPointerDir, mountKey(mountpoint))
}

/** The state folder of the mount at `mountpoint`: `--repo`'s, else the one its pointer names, else the default repo's. */
async function findState (mountpoint: string, repoFlag: string | undefined): Promise<string> {
  if ((repoFlag ?? '') !== '' || (process.env[REPO_DEFAULTS.envVar] ?? '') !== '') return stateDir(resolveRepoPath(repoFlag), mountpoint)
  const pointed = await readlink(pointerOf(mountpoint)).catch(() => undefined)
  // umount signals the pid found there and removes the folder: only a mount state folder of
  // this mountpoint is followed (`<repo>/mounts/<key>`), whatever else the link says
  if (pointed != null && isAbsolute(pointed) && basename(pointed) === mountKey(mountpoint) && basename(dirname(pointed)) === 'mounts') return pointed
  return stateDir(resolveRepoPath(undefined), mountpoint)
}

function mountCommand (): Command {
  return new Command('mount')
    .description('mount an image from IPFS read-only, fetching only what is read (each layer through FUSE, merged with overlayfs); stays in the foreground until Ctrl-C or `ipfs-estargz umount`')
    .argument('<cid>', 'image root CID (ipfs://CID, /ipfs/CID or CID)')
    .argument('<mountpoint>', 'an existing empty directory')
    .option('--repo <dir>', 'repo of the embedded node')
    .option('--layer <n>', 'mount only layer N (0 = bottom)', parseNonNegativeInt('--layer'))
    .option('--platform <os/arch>', 'platform of a multi-platform image (default: this machine\'s)')
    .option('--peer <multiaddr>', 'peer to fetch blocks from (repeatable)', collect, [])
    .option('--config <file>', 'take the node\'s [ipfs] settings from this daemon configuration: listen, peers, bootstrap, mDNS, the DHT, the swarm key (none by default: the mount only fetches, from --peer)')
    .option('--open-timeout <sec>', `the image's index, manifest and config must arrive within this many seconds, else the mount fails with "no peer has CID …" (default: --config's [ipfs] find_timeout_sec, ${DAEMON_DEFAULTS.ipfs.findTimeoutSec})`, parseNonNegativeInt('--open-timeout'))
    .option('--no-prefetch', 'do not wait for the prioritized files at mount')
    .option('--no-background-fetch', 'do not fetch the rest of each layer in the background')
    .addOption(logLevelOption())
    .action(async (ref: string, mountpoint: string, flags: MountFlags) => {
      requireRoot('mount') // FUSE with allow_other, overlayfs, bind mounts: checked before the repo is touched
      const logger = createLogger(flags.logLevel)
      const target = resolve(mountpoint)
      const config = flags.config != null ? await loadConfig(flags.config) : undefined
      const nodeOptions = config != null ? await nodeOptionsFor(config.ipfs) : {}
      const openTimeout = flags.openTimeout ?? config?.ipfs.findTimeoutSec ?? DAEMON_DEFAULTS.ipfs.findTimeoutSec
      const repo = await openCommandRepo(flags.repo, logger, { ...nodeOptions, peers: [...(nodeOptions.peers ?? []), ...flags.peer], create: true })
      const state = stateDir(repo.path, target)
      await mkdir(state, { recursive: true })
      const mounts = new MountManager({ logger }, { root: state })
      await mounts.start() // clears FUSE mounts a crashed run left here
      await lazyUnmount(target).catch(() => {})
      const cache = new ChunkCache({ logger }, { dir: join(repo.path, 'cache', 'chunks') })
      const mounter = new LayerMounter({
        logger,
        mounts,
        cache,
        openSource: async (cid, signal) => new ReadaheadSource(await IpfsSource.open(repo.node.blocks, cid, { signal }))
      }, { prefetchTimeoutMs: flags.prefetch ? undefined : 0, waitForPrefetchAtMount: true, backgroundFetch: flags.backgroundFetch })
      let overlay = false
      const stop = async (): Promise<void> => {
        // where this mount's blocks came from, and what it served (a mount has no `stats` command: the repo is its)
        logger.info({ fetched: repo.node.fetchStats(), exchange: repo.node.exchange.stats(), peers: repo.node.exchange.peerStats(), discovery: repo.node.discovery.stats() }, 'mount: block statistics')
        if (overlay) await run('umount', [target]).catch(async () => await run('umount', ['-l', target]).catch(() => {}))
        await mounts.stop()
        await cache.stop?.()
        await rm(join(state, 'pid'), { force: true })
        await rmPointer(target, state)
        await repo.close()
      }
      try {
        // with the DHT: connect to who holds the image before its first block is asked for
        const root = parseIpfsRef(ref)
        await repo.node.discovery.connectProviders(root)
        const opening = AbortSignal.timeout(openTimeout * 1000)
        let source: IpfsImageReader
        let image: Awaited<ReturnType<typeof resolveImages>>['images'][number]
        try {
          source = await IpfsImageReader.open(repo.node.blocks, ref, { signal: opening })
          const res = await resolveImages(source, { platform: flags.platform != null ? parsePlatform(flags.platform) : (undefined), signal: opening })
          image = res.images.length === 1 ? res.images[0] : (await resolveImages(source, { platform: hostPlatform(), signal: opening })).images[0]
        } catch (err) {
          if (opening.aborted) throw new MountOpenTimeoutError(noPeerHasCid(root.toString(), openTimeout, repo.node.helia.libp2p.getPeers().length), { cause: err })
          throw err
        }
        const layers = image.layers
        // kept from garbage collection: what of the image is stored here, now and as it is read
        await pinRoot({ pins: repo.index.pins, localBlockstore: repo.node.localBlockstore }, source.rootCid, { lazy: true, metadata: { name: ref } })
        if (flags.layer != null && flags.layer >= layers.length) throw new UsageError(`--layer ${flags.layer}: the image has ${layers.length} layers (0-${layers.length - 1})`)
        const mountLayer = async (i: number, at: string): Promise<void> => {
          const l = layers[i]
          const tocDigest = l.annotations?.[TOC_DIGEST_ANNOTATION]
          const cid = (await source.cidOf(l)).toString()
          await mkdir(at, { recursive: true })
          // the labels containerd would pass on: the layer's TOC hint among them
          await mounter.mount(at, inheritedLabels(l.annotations), { cid, digest: l.digest, tocDigest, via: 'urls' })
        }
        if (flags.layer != null) {
          await mountLayer(flags.layer, target)
        } else {
          const dirs: string[] = []
          for (let i = 0; i < layers.length; i++) {
            const at = join(state, `layer-${i}`)
            await mountLayer(i, at)
            dirs.push(at)
          }
          // overlayfs: lowerdir lists the top layer first. One layer needs no overlay: bind it.
          // Users reach this mount: an image's setuid binaries and device nodes stay inert (the
          // bind's remount to read-only would otherwise drop the FUSE mount's nosuid,nodev).
          if (dirs.length === 1) await run('mount', ['--bind', '-o', USER_MOUNT_OPTIONS, dirs[0], target])
          else await run('mount', ['-t', 'overlay', 'overlay', '-o', `${USER_MOUNT_OPTIONS},lowerdir=${[...dirs].reverse().join(':')}`, target])
          overlay = true
        }
        // this node holds (part of) the image now: peers may find it here
        void repo.node.discovery.provide([root, ...await Promise.all(layers.map(async l => await source.cidOf(l)))])
        await writeFile(join(state, 'pid'), String(process.pid))
        await mkdir(DEFAULTS.mountPointerDir, { recursive: true, mode: 0o700 }).then(async () => {
          await rm(pointerOf(target), { force: true })
          await symlink(state, pointerOf(target))
        }).catch((err: Error) => { logger.warn({ err: err.message }, 'mount: no pointer for `umount` without --repo') })
        process.stderr.write(`ipfs-estargz: ${ref} mounted at ${target} (${flags.layer != null ? `layer ${flags.layer}` : `${layers.length} layers`}); Ctrl-C or \`ipfs-estargz umount ${target}\` to unmount\n`)
        await new Promise<void>(resolve => {
          process.once('SIGINT', resolve)
          process.once('SIGTERM', resolve)
        })
      } finally {
        await stop()
      }
    })
}

function umountCommand (): Command {
  return new Command('umount')
    .description('unmount what `ipfs-estargz mount` mounted (also cleans up after a crashed mount)')
    .argument('<mountpoint>', 'the mountpoint given to mount')
    .option('--repo <dir>', 'repo the mount was made from (default: found from the mountpoint)')
    .action(async (mountpoint: string, flags: { repo?: string }) => {
      requireRoot('umount')
      const target = resolve(mountpoint)
      const state = await findState(target, flags.repo)
      const pid = Number(await readFile(join(state, 'pid'), 'utf8').catch(() => 'NaN'))
      if (Number.isInteger(pid) && pid > 0 && processAlive(pid)) {
        process.kill(pid, 'SIGTERM')
        const deadline = Date.now() + DEFAULTS.umountWaitMs
        while (processAlive(pid) && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, DEFAULTS.umountPollMs))
        if (!processAlive(pid)) return
        throw new UmountTimeoutError(pid)
      }
      // No live mount process (crashed, or killed): clear what it left.
      await run('umount', ['-l', target]).catch(() => {})
      for (let i = 0; i < DEFAULTS.umountMaxLayers; i++) {
        const at = join(state, `layer-${i}`)
        if (await lazyUnmount(at).then(() => false, () => true)) break
      }
      await rm(state, { recursive: true, force: true })
      await rmPointer(target, state)
    })
}

/** Removes the mountpoint's pointer if it still names this state folder (another mount may have taken the mountpoint since). */
async function rmPointer (mountpoint: string, state: string): Promise<void> {
  const p = pointerOf(mountpoint)
  if (await readlink(p).catch(() => undefined) === state) await rm(p, { force: true })
}

function processAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

export { mountCommand, umountCommand }
