// Serve a folder over Bitswap from an in-memory Helia 7 node (helia-node.mjs).
// Usage: node helia-serve.mjs DIR [--exit-after SECONDS]
// Prints "multiaddr ADDR", "cid ROOT" and "ready" (one per line), then serves until stdin closes,
// SIGTERM, or --exit-after seconds (default 600) — so a test that dies never leaves it behind.
import { unixfs, globSource } from '@helia/unixfs'
import { startHelia, option } from './helia-node.mjs'

const dir = process.argv[2]
const helia = await startHelia()
const fs = unixfs(helia)
let root
for await (const entry of fs.addAll(globSource(dir, '**/*', { hidden: false }), { wrapWithDirectory: true })) {
  root = entry.cid
}
const stop = async () => { await helia.stop(); process.exit(0) }
process.on('SIGTERM', stop)
process.stdin.on('end', stop)
process.stdin.resume()
setTimeout(stop, Number(option('--exit-after', '600')) * 1000).unref?.()
console.log(`multiaddr ${helia.libp2p.getMultiaddrs()[0].toString()}`)
console.log(`cid ${root.toString()}`)
console.log('ready')
