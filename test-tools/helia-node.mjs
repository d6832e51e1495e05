// Shared by helia-serve.mjs and helia-fetch.mjs: an in-memory Helia 7 node with only TCP (on
// 127.0.0.1), Noise, Yamux, identify and Bitswap — no DHT, no HTTP routers, no other transports —
// so the only way a block can reach it is Bitswap over the connection the test makes.
// @helia/libp2p and @multiformats/multiaddr come with helia and libp2p (hoisted, pinned by
// package-lock.json); withLibp2pLight keeps Helia from adding its default services (DHT, …).
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { withBitswap } from '@helia/bitswap'
import { withLibp2pLight } from '@helia/libp2p'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { MemoryBlockstore } from 'blockstore-core'
import { MemoryDatastore } from 'datastore-core'
import { createHeliaLight } from 'helia'

export async function startHelia () {
  const helia = withBitswap(withLibp2pLight(createHeliaLight({
    blockstore: new MemoryBlockstore(),
    datastore: new MemoryDatastore(),
    routers: []
  }), {
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify() }
  }))
  await helia.start()
  return helia
}

/** The option after NAME in argv, or the default. */
export function option (name, fallback) {
  const at = process.argv.indexOf(name)
  return at >= 0 ? process.argv[at + 1] : fallback
}
