// Package storage keeps a peer's content-addressed objects: a boxo
// blockstore on a persistent datastore under the peer's home, the dag-cbor
// checkpoint, update, block and certificate objects of DESIGN.md §3 with
// their raw shard blocks, pins and a retention policy with garbage
// collection, and CAR v1 import and export.
//
// Status: specified by issue 2/6 and not written yet; nothing imports it.
package storage
