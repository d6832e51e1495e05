// Independent check of fabnode's gateway: @helia/verified-fetch reads through it and verifies every
// block it receives against its CID. Helia is built with the HTTP block broker only, and the one
// gateway given as its only "recursive gateway": no libp2p, no delegated routing, no other network.
// Usage (Node >= 22: test-tools/node_modules/.bin/node):
//   node verified-fetch.mjs http://127.0.0.1:PORT OUTDIR 'ipfs://CID/path' ['ipfs://CID|accept' …]
// Each resource is fetched (an "|accept" suffix sets the Accept header); its body is written to
// OUTDIR/N (N counting from 0) and one JSON line per resource says status, content type and size.
import fs from 'node:fs'
import path from 'node:path'
import { createHeliaLight } from 'helia'
import { withHTTP } from '@helia/http'
import { createVerifiedFetchWithHelia } from '@helia/verified-fetch'

const [gateway, outdir, ...resources] = process.argv.slice(2)
const helia = withHTTP(createHeliaLight(), {
  delegatedRouters: [],
  recursiveGateways: [gateway],
  allowInsecure: true,
  allowLocal: true
})
// Helia 7's routing waits forever when only fallback routers exist (it asks the ordinary ones
// first and, with none, never hears that they finished): one that finds nothing ends that wait.
helia.addRouter({ name: 'no-routing', async * findProviders () {} })
await helia.start()
const verifiedFetch = await createVerifiedFetchWithHelia(helia)
let failed = false
for (const [n, item] of resources.entries()) {
  const [resource, accept] = item.split('|')
  const signal = AbortSignal.timeout(60_000)
  try {
    const response = await verifiedFetch(resource, { signal, headers: accept ? { accept } : {} })
    const body = new Uint8Array(await response.arrayBuffer())
    fs.writeFileSync(path.join(outdir, String(n)), body)
    console.log(JSON.stringify({ resource, status: response.status, type: response.headers.get('content-type'), size: body.length }))
  } catch (err) {
    failed = true
    console.log(JSON.stringify({ resource, error: String(err) }))
  }
}
await verifiedFetch.stop()
await helia.stop()
process.exit(failed ? 1 : 0)
