import { randomBytes } from 'node:crypto'
import { open, rename, rm } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { buildEstargz, type BuildResult, type TarInput, type WriterOptions } from './writer.js'

/**
 * Builds an eStargz blob into a file. The blob is written next to `outPath` under a temporary
 * name and renamed into place only when complete, so a failed or aborted build never leaves a
 * half-written output behind.
 */
export async function buildEstargzFile (input: TarInput, outPath: string, options: WriterOptions = {}): Promise<BuildResult> {
  const tmp = join(dirname(outPath), `.${basename(outPath)}.partial-${randomBytes(6).toString('hex')}`)
  const fh = await open(tmp, 'wx')
  let ok = false
  try {
    const result = await buildEstargz(input, async ({ bytes }) => {
      let done = 0
      while (done < bytes.length) {
        const { bytesWritten } = await fh.write(bytes, done, bytes.length - done)
        done += bytesWritten
      }
    }, options)
    await fh.sync()
    await fh.close()
    await rename(tmp, outPath)
    ok = true
    return result
  } finally {
    if (!ok) {
      await fh.close().catch(() => {})
      await rm(tmp, { force: true })
    }
  }
}
