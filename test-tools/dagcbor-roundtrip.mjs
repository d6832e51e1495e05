// Independent oracle for fabnode records: decode each hex DAG-CBOR block given on stdin (one
// per line) with @ipld/dag-cbor (strict by default), re-encode it, and print the re-encoded
// hex and its CIDv1 (dag-cbor, sha2-256), so a test can compare both with fabnode's.
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { readFileSync } from 'node:fs'

for (const line of readFileSync(0, 'utf8').split('\n').filter(Boolean)) {
  const bytes = Uint8Array.from(Buffer.from(line.trim(), 'hex'))
  const again = dagCbor.encode(dagCbor.decode(bytes))
  const cid = CID.createV1(dagCbor.code, await sha256.digest(again))
  console.log(Buffer.from(again).toString('hex'), cid.toString())
}
