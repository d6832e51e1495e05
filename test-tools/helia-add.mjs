// Independent oracle for fabnode's directories: add a folder with Helia's @helia/unixfs addAll
// at its defaults (raw leaves, CIDv1, 1 MiB chunks, balanced 1024 wide, shard once the links
// pass 256 KiB) into an in-memory blockstore, print the root CID, and optionally write the
// DAG as a CARv1 rooted there.
// Usage: node helia-add.mjs DIR [OUT.car]
// The folder's files are given as fabnode and ipfs-car take them: regular files only, names
// starting with "." skipped, in sorted order; the folder itself is the root (wrapWithDirectory),
// so a folder holding only cad/ gives a root whose one entry is cad.
import fs from 'node:fs'
import path from 'node:path'
import { unixfs } from '@helia/unixfs'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { CarWriter } from '@ipld/car'
import * as dagPb from '@ipld/dag-pb'

const [dir, out] = process.argv.slice(2)

async function toBytes (got) {
  const value = await got
  if (value instanceof Uint8Array) return value
  const parts = [] // blockstore-core 7 may hand a block back as an async iterable of chunks
  for await (const part of value) parts.push(part)
  return Buffer.concat(parts)
}

function * files (base, rel) {
  const names = fs.readdirSync(path.join(base, rel)).sort()
  for (const name of names) {
    if (name.startsWith('.')) continue
    const relPath = rel === '' ? name : `${rel}/${name}`
    const st = fs.statSync(path.join(base, relPath))
    if (st.isDirectory()) yield * files(base, relPath)
    else if (st.isFile()) yield { path: relPath, content: fs.readFileSync(path.join(base, relPath)) }
  }
}

const blockstore = new MemoryBlockstore()
const fs_ = unixfs({ blockstore })
let root
for await (const entry of fs_.addAll(files(dir, ''), { wrapWithDirectory: true })) {
  root = entry.cid
}
console.log(root.toString())

if (out != null) {
  const { writer, out: carBytes } = CarWriter.create([root])
  const sink = (async () => {
    const chunks = []
    for await (const chunk of carBytes) chunks.push(chunk)
    fs.writeFileSync(out, Buffer.concat(chunks))
  })()
  const seen = new Set()
  const stack = [root]
  while (stack.length > 0) {
    const cid = stack.pop()
    if (seen.has(cid.toString())) continue
    seen.add(cid.toString())
    const bytes = await toBytes(blockstore.get(cid))
    await writer.put({ cid, bytes })
    if (cid.code === dagPb.code) {
      const links = dagPb.decode(bytes).Links
      for (let i = links.length - 1; i >= 0; i--) stack.push(links[i].Hash)
    }
  }
  await writer.close()
  await sink
}
