// CAR files as other IPFS tools write them, for fabnode's import tests (issue 16).
//
//   node car-foreign.mjs kubo DIR OUT.car
//     A Kubo-style CAR of DIR's files: ipfs-unixfs-importer with CIDv0 (dag-pb leaves,
//     256 KiB chunks, as `ipfs add` by default), written with @ipld/car's CarWriter, so the
//     header root and every section CID are CIDv0. Prints the root (Qm…).
//
//   node car-foreign.mjs v2 IN.car OUT.car
//     Wraps the CARv1 IN.car into a CARv2 (IPLD spec transport/car/carv2): the 11-byte pragma
//     0a a1 67 76 65 72 73 69 6f 6e 02; a 40-byte header (16 bytes of characteristics with the
//     "fully indexed" bit clear, then data offset, data size, index offset, u64 little-endian);
//     8 bytes of zero padding; the CARv1 unchanged (the data); then an IndexSorted index
//     (multicodec 0x0400: varint codec, then buckets of {u32 width, u64 count, entries sorted by
//     digest, each digest + u64 offset of the section from the data start}). @ipld/car does not
//     write CARv2, but it reads it: the result is read back with @ipld/car's CarReader, and the
//     script fails unless it yields IN.car's roots and blocks. Prints "roots R…" and the count.
import fs from 'node:fs'
import path from 'node:path'
import { CarWriter } from '@ipld/car/writer'
import { CarReader } from '@ipld/car/reader'
import { CarBlockIterator } from '@ipld/car/iterator'
import { importer } from 'ipfs-unixfs-importer'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { CID } from 'multiformats/cid'
import { varint } from 'multiformats'

const [mode, src, out] = process.argv.slice(2)

function * files (root, prefix = '') {
  for (const name of fs.readdirSync(path.join(root, prefix)).sort()) {
    const rel = prefix ? `${prefix}/${name}` : name
    if (fs.statSync(path.join(root, rel)).isDirectory()) yield * files(root, rel)
    else yield { path: rel, content: fs.readFileSync(path.join(root, rel)) }
  }
}

if (mode === 'kubo') {
  const blockstore = new MemoryBlockstore()
  let root
  for await (const entry of importer(files(src), blockstore, {
    cidVersion: 0, rawLeaves: false, wrapWithDirectory: true, chunker: undefined
  })) root = entry.cid
  const order = []
  const seen = new Set()
  async function walk (cid) { // depth-first, each block once, as Kubo's `dag export`
    if (seen.has(cid.toString())) return
    seen.add(cid.toString())
    let bytes = await blockstore.get(cid)
    if (!(bytes instanceof Uint8Array)) { // blockstore-core 7 streams a block as chunks
      const parts = []
      for await (const part of bytes) parts.push(part)
      bytes = new Uint8Array(Buffer.concat(parts))
    }
    order.push({ cid, bytes })
    const { decode } = await import('@ipld/dag-pb')
    if (cid.code === 0x70) for (const link of decode(bytes).Links) await walk(link.Hash)
  }
  await walk(root)
  const { writer, out: stream } = CarWriter.create([root])
  const chunks = []
  const done = (async () => { for await (const c of stream) chunks.push(c) })()
  for (const block of order) await writer.put(block)
  await writer.close()
  await done
  fs.writeFileSync(out, Buffer.concat(chunks))
  console.log(root.toString())
} else if (mode === 'v2') {
  const data = fs.readFileSync(src)
  const entries = []
  const iterator = await CarBlockIterator.fromBytes(data)
  const v1Roots = (await iterator.getRoots()).map(String)
  // section offsets, from the data start: walk the CARv1 framing
  let pos = 0
  const [headerLength, headerVarint] = varint.decode(data, 0)
  pos = headerVarint + headerLength
  const v1Blocks = []
  while (pos < data.length) {
    const [length, n] = varint.decode(data, pos)
    const cid = CID.decodeFirst(data.subarray(pos + n))[0]
    entries.push({ digest: cid.multihash.digest, offset: pos })
    v1Blocks.push(cid.toString())
    pos += n + length
  }
  entries.sort((a, b) => Buffer.compare(Buffer.from(a.digest), Buffer.from(b.digest)))
  const pragma = Buffer.from('0aa16776657273696f6e02', 'hex')
  const padding = Buffer.alloc(8)
  const dataOffset = pragma.length + 40 + padding.length
  const indexOffset = dataOffset + data.length
  const header = Buffer.alloc(40)
  header.writeBigUInt64LE(BigInt(dataOffset), 16)
  header.writeBigUInt64LE(BigInt(data.length), 24)
  header.writeBigUInt64LE(BigInt(indexOffset), 32)
  const width = 32 + 8
  const bucket = Buffer.alloc(4 + 8 + width * entries.length)
  bucket.writeUInt32LE(width, 0)
  bucket.writeBigUInt64LE(BigInt(entries.length), 4)
  entries.forEach((e, i) => {
    Buffer.from(e.digest).copy(bucket, 12 + i * width)
    bucket.writeBigUInt64LE(BigInt(e.offset), 12 + i * width + 32)
  })
  const index = Buffer.concat([Buffer.from(varint.encodeTo(0x0400, new Uint8Array(varint.encodingLength(0x0400)))), bucket])
  const car = Buffer.concat([pragma, header, padding, data, index])
  fs.writeFileSync(out, car)
  // the independent reader must see the same CAR inside
  const reader = await CarReader.fromBytes(car)
  if (reader.version !== 2) throw new Error(`@ipld/car reads version ${reader.version}`)
  const roots = (await reader.getRoots()).map(String)
  const blocks = []
  for await (const { cid } of reader.blocks()) blocks.push(cid.toString())
  if (JSON.stringify(roots) !== JSON.stringify(v1Roots) || JSON.stringify(blocks) !== JSON.stringify(v1Blocks)) {
    throw new Error('@ipld/car reads a different CAR inside the CARv2')
  }
  console.log(`roots ${roots.join(' ')}`)
  console.log(`blocks ${blocks.length} data-offset ${dataOffset} data-size ${data.length} index-offset ${indexOffset}`)
} else {
  console.error('usage: car-foreign.mjs kubo DIR OUT.car | v2 IN.car OUT.car')
  process.exit(2)
}
