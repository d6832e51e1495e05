// Fetch a UnixFS folder by CID over Bitswap from one peer, with an in-memory Helia 7 node
// (helia-node.mjs) and @helia/unixfs: ls every directory, stat each entry, cat every file into OUTDIR.
// Usage: node helia-fetch.mjs MULTIADDR CID OUTDIR [--timeout SECONDS]
// Prints one JSON line {"files": N, "bytes": B, "seconds": S}; exits 1 with the error on stderr.
import fs from 'node:fs'
import path from 'node:path'
import { unixfs } from '@helia/unixfs'
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'
import { startHelia, option } from './helia-node.mjs'

const [addr, cidText, outDir] = process.argv.slice(2)
const signal = AbortSignal.timeout(Number(option('--timeout', '60')) * 1000)
const helia = await startHelia()
let files = 0
let bytes = 0
const started = performance.now()

async function walk (cid, dir) {
  fs.mkdirSync(dir, { recursive: true })
  for await (const entry of ufs.ls(cid, { signal })) {
    const target = path.join(dir, entry.name)
    const { type } = await ufs.stat(entry.cid, { signal })
    if (type === 'directory') {
      await walk(entry.cid, target)
    } else {
      const out = fs.openSync(target, 'w')
      for await (const chunk of ufs.cat(entry.cid, { signal })) {
        fs.writeSync(out, chunk)
        bytes += chunk.length
      }
      fs.closeSync(out)
      files += 1
    }
  }
}

const ufs = unixfs(helia)
try {
  await helia.libp2p.dial(multiaddr(addr), { signal })
  await walk(CID.parse(cidText), outDir)
  console.log(JSON.stringify({ files, bytes, seconds: (performance.now() - started) / 1000 }))
  await helia.stop()
  process.exit(0)
} catch (err) {
  console.error(`helia-fetch: ${err.name}: ${err.message}`)
  process.exit(1)
}
