// Independent check of a CAR file fabnode wrote: read it with @ipld/car, re-hash every block
// with sha2-256 and compare with its CID. Prints "roots R1 R2…" then one "CID" line per block;
// exits 1 at the first block whose bytes do not match its CID.
// Usage: node car-verify.mjs FILE.car
import fs from 'node:fs'
import { CarBlockIterator } from '@ipld/car/iterator'
import { sha256 } from 'multiformats/hashes/sha2'
import { equals } from 'multiformats/bytes'

const iterator = await CarBlockIterator.fromIterable(fs.createReadStream(process.argv[2]))
console.log('roots ' + (await iterator.getRoots()).map(String).join(' '))
for await (const { cid, bytes } of iterator) {
  if (cid.multihash.code !== sha256.code) { console.error(`unexpected hash in ${cid}`); process.exit(1) }
  const digest = await sha256.digest(bytes)
  if (!equals(digest.bytes, cid.multihash.bytes)) { console.error(`block ${cid} does not match its bytes`); process.exit(1) }
  console.log(String(cid))
}
