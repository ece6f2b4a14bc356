import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FileSource } from '../../src/source/file.js'
import { rangeSourceSuite } from './suite.js'

rangeSourceSuite('FileSource', async (data) => {
  const dir = await mkdtemp(join(tmpdir(), 'file-source-'))
  const path = join(dir, 'blob')
  await writeFile(path, data)
  const source = await FileSource.open(path)
  return {
    source,
    cleanup: async () => {
      await source.close()
      await rm(dir, { recursive: true, force: true })
    }
  }
})
