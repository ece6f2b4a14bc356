import { createReadStream } from 'node:fs'
import { mkdtemp, open, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { OciLayoutWriter, type Descriptor } from '../oci/index.js'
import type { BlobPublisher, FinishedImage, PublishedBlob, SegmentProducer } from './publisher.js'

/**
 * Writes converted images as an OCI image layout (`--output oci:DIR`). A layer streams into a
 * temporary file while it is converted and is moved into `blobs/` through the layout writer,
 * which verifies it; an aborted conversion leaves index.json untouched and no partial blob.
 */
export class LayoutPublisher implements BlobPublisher {
  readonly name: string
  private constructor (private readonly writer: OciLayoutWriter, private readonly tmp: string) {
    this.name = `oci:${writer.dir}`
  }

  static async open (dir: string): Promise<LayoutPublisher> {
    const writer = await OciLayoutWriter.open(dir)
    return new LayoutPublisher(writer, await mkdtemp(join(dir, '.tmp-')))
  }

  async putSegments (produce: SegmentProducer, signal?: AbortSignal): Promise<PublishedBlob> {
    const path = join(this.tmp, `${Date.now()}-${Math.random().toString(16).slice(2)}`)
    const fh = await open(path, 'wx')
    try {
      const desc = await produce(async (segment) => {
        let done = 0
        while (done < segment.bytes.length) done += (await fh.write(segment.bytes, done)).bytesWritten
      })
      await fh.close()
      await this.writer.writeBlob(desc, createReadStream(path), signal)
      return { urls: [] }
    } finally {
      await fh.close().catch(() => {})
      await rm(path, { force: true })
    }
  }

  async putBytes (desc: Descriptor, bytes: Uint8Array, signal?: AbortSignal): Promise<PublishedBlob> {
    await this.writer.writeBlob(desc, bytes, signal)
    return { urls: [] }
  }

  async finish (image: FinishedImage): Promise<void> {
    this.writer.addImage(image.root, image.tag)
    await this.writer.commit()
    await rm(this.tmp, { recursive: true, force: true })
  }

  async abort (): Promise<void> {
    await this.writer.abort()
    await rm(this.tmp, { recursive: true, force: true })
  }
}
