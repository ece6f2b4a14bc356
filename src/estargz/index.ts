/**
 * The eStargz format: writer, reader, TOC, footers, verification. Depends on nothing else in
 * this project, so it can be used (and tested) on its own.
 */
export * from './constants.js'
export * from './errors.js'
export { cleanEntryName, assertSafeEntryName, climbsOutOfRoot } from './paths.js'
export { encodeFooter, parseFooter, type ParsedFooter } from './footer.js'
export { encodeToc, parseToc, formatModtime, parseModtime, type Toc, type TocEntry, type TocEntryType } from './toc.js'
export { buildEstargz, type WriterOptions, type BuildResult, type TarInput } from './writer.js'
export { buildEstargzFile } from './file.js'
export type { BlobSegment, SegmentKind, SegmentSink } from './members.js'
export { EstargzReader, decodeChunk, type RangeRead, type OpenOptions, type TocMemberHint, type VerifyReport } from './reader.js'
export type { LayerNode, LayerTree, Chunk, NodeType } from './tree.js'
export { decompressInput, detectCompression, type InputCompression } from './input.js'
export { sha256Digest, Sha256, EMPTY_DIGEST } from './digest.js'
export { readTarStream, type TarStreamEntry } from './tar/stream.js'
export { indexTarFile, TarFileReader, type IndexedTarEntry } from './tar/indexed.js'
export type { TarHeader, EntryType } from './tar/header.js'
