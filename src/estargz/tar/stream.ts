import { ByteReader } from '../byte-reader.js'
import { MalformedTarError } from '../errors.js'
import {
  BLOCK_SIZE, EXTENSION_TYPES, checksumOk, isZeroBlock, paddedSize, parseHeader, parsePaxRecords, sizeField, typeflag,
  type Extensions, type TarHeader
} from './header.js'

/** Largest PAX or GNU long-name payload accepted (a hostile header could claim gigabytes). */
const MAX_EXTENSION_SIZE = 1 << 20

const utf8 = new TextDecoder('utf-8')

/** One entry of a tar stream. Its payload must be read (or is skipped) before the next entry. */
export interface TarStreamEntry {
  header: TarHeader
  /** Every header block of the entry, extension headers included, exactly as in the input. */
  raw: Uint8Array
  /** Offset of the first header block in the (uncompressed) input. */
  offset: number
  /** Payload bytes, in pieces of at most `maxPiece` bytes. */
  data: (maxPiece?: number) => AsyncIterable<Uint8Array>
}

function concat (parts: Uint8Array[]): Uint8Array {
  return parts.length === 1 ? parts[0] : Buffer.concat(parts)
}

/**
 * Parses a tar stream (ustar, PAX, GNU) into entries. Stops at the end-of-archive marker or a
 * clean end of input; anything else that is not a valid header is a {@link MalformedTarError}.
 */
export async function * readTarStream (source: AsyncIterable<Uint8Array>): AsyncGenerator<TarStreamEntry> {
  const reader = new ByteReader(source)
  const globalPax = new Map<string, Uint8Array>()
  try {
    let first = true
    while (true) {
      const start = reader.position
      const rawBlocks: Uint8Array[] = []
      const ext: Extensions = { pax: new Map(globalPax) }
      let block: Uint8Array
      // Extension headers (PAX x/g, GNU L/K) precede the main header they describe.
      while (true) {
        block = await reader.read(BLOCK_SIZE)
        if (block.length === 0 && rawBlocks.length === 0) return // clean end without EOF marker
        if (block.length < BLOCK_SIZE) throw new MalformedTarError(`tar stream truncated at offset ${reader.position}`)
        if (isZeroBlock(block) && rawBlocks.length === 0) return // end-of-archive marker
        if (!checksumOk(block)) {
          throw new MalformedTarError(first ? 'input is not a tar archive (bad header checksum at offset 0)' : `corrupt tar header at offset ${reader.position - BLOCK_SIZE}`)
        }
        first = false
        block = Uint8Array.from(block) // detach from the reader's buffer: kept in `raw`
        rawBlocks.push(block)
        const flag = typeflag(block)
        if (!EXTENSION_TYPES.has(flag)) break
        const size = sizeField(block)
        if (size > MAX_EXTENSION_SIZE) throw new MalformedTarError(`tar extension header at offset ${reader.position - BLOCK_SIZE} claims ${size} bytes`)
        const padded = paddedSize(size)
        const payload = await reader.read(padded)
        if (payload.length < padded) throw new MalformedTarError(`tar stream truncated inside an extension header at offset ${reader.position}`)
        rawBlocks.push(Uint8Array.from(payload))
        const body = payload.subarray(0, size)
        if (flag === 'x') {
          for (const [k, v] of parsePaxRecords(body)) ext.pax.set(k, Uint8Array.from(v))
        } else if (flag === 'g') {
          for (const [k, v] of parsePaxRecords(body)) {
            globalPax.set(k, Uint8Array.from(v))
            ext.pax.set(k, Uint8Array.from(v))
          }
        } else {
          const nul = body.indexOf(0)
          const text = utf8.decode(nul < 0 ? body : body.subarray(0, nul))
          if (flag === 'L') ext.gnuLongName = text
          else ext.gnuLongLink = text
        }
      }
      const header = parseHeader(block, ext)
      let remaining = header.size
      let padding = paddedSize(header.size) - header.size
      let consumed = false
      const entry: TarStreamEntry = {
        header,
        raw: concat(rawBlocks),
        offset: start,
        data: async function * (maxPiece = 1 << 20) {
          if (consumed) throw new Error('tar entry data already read')
          consumed = true
          while (remaining > 0) {
            const piece = await reader.readUpTo(Math.min(remaining, maxPiece))
            if (piece == null) throw new MalformedTarError(`tar stream truncated inside ${JSON.stringify(header.name)}`)
            remaining -= piece.length
            yield piece
          }
        }
      }
      yield entry
      if (remaining > 0) {
        const skipped = await reader.skip(remaining)
        if (skipped < remaining) throw new MalformedTarError(`tar stream truncated inside ${JSON.stringify(header.name)}`)
        remaining = 0
      }
      if (padding > 0) {
        // A missing final padding is tolerated, as GNU tar and Go do.
        await reader.skip(padding)
        padding = 0
      }
    }
  } finally {
    await reader.close()
  }
}
