// Independent oracle for fabnode's balanced file layout: build a file with @ipld/unixfs (the
// library ipfs-car 3.x uses) at a chosen chunk size and tree width, print the root CID.
// Usage: node unixfs-file.mjs FILE CHUNK_SIZE WIDTH
import fs from 'node:fs'
import * as UnixFS from '@ipld/unixfs'
import { withMaxChunkSize } from '@ipld/unixfs/file/chunker/fixed'
import { withWidth } from '@ipld/unixfs/file/layout/balanced'
import * as raw from 'multiformats/codecs/raw'

const [file, chunkSize, width] = process.argv.slice(2)
const settings = UnixFS.configure({
  fileChunkEncoder: raw,
  smallFileEncoder: raw,
  chunker: withMaxChunkSize(Number(chunkSize)),
  fileLayout: withWidth(Number(width))
})
const { readable, writable } = new TransformStream({}, UnixFS.withCapacity(1 << 30))
const writer = UnixFS.createWriter({ writable, settings })
const drain = (async () => { for await (const _ of readable) { /* discard blocks */ } })()
const fileWriter = UnixFS.createFileWriter(writer)
fileWriter.write(fs.readFileSync(file))
const link = await fileWriter.close()
await writer.close()
await drain
console.log(link.cid.toString())
