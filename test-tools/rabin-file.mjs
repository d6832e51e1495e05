// Independent oracle for fabnode's rabin chunking profile: import files with ipfs-unixfs-importer
// (the importer inside Helia and ipfs-car) using its rabin chunker (rabin-wasm) and the rest of the
// unixfs-v1-2025 settings (CIDv1, raw leaves, balanced layout 1024 wide); print one root CID a line.
// Usage: node rabin-file.mjs AVG_CHUNK_SIZE FILE...
import fs from 'node:fs'
import { importer } from 'ipfs-unixfs-importer'
import { rabin } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'

const [avg, ...files] = process.argv.slice(2)
const blockstore = { async put (cid) { return cid }, async get () { throw new Error('unused') }, async has () { return false } }
for (const file of files) {
  const source = [{ content: fs.createReadStream(file, { highWaterMark: 65536 + 17 }) }]
  let root
  for await (const entry of importer(source, blockstore, {
    cidVersion: 1, rawLeaves: true, reduceSingleLeafToSelf: true, wrapWithDirectory: false,
    chunker: rabin({ avgChunkSize: Number(avg) }), layout: balanced({ maxChildrenPerNode: 1024 })
  })) { root = entry.cid }
  console.log(root.toString())
}
