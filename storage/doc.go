// Package storage keeps a peer's content-addressed objects (DESIGN.md §3):
// a boxo blockstore that re-hashes every block it reads, on a persistent
// datastore under the peer's home; the dag-cbor checkpoint, update, block and
// certificate manifests with their raw shard blocks; pins, a retention
// policy and garbage collection; CAR v1 export and import; and the
// quarantine of blocks found corrupt on disk.
//
// Encoding: manifests are canonical DAG-CBOR (map keys length-first, 64-bit
// floats, no indefinite lengths, CIDs as tag 42), so the same object always
// has the same CID; Decode refuses any node that does not re-encode to its
// own bytes, bounds arrays, maps and nesting before allocating, and rejects
// unknown fields and kinds. Shards are raw blocks (package shard). CIDs are
// CIDv1 with sha2-256, printed in base32.
//
// Why LevelDB (go-ds-leveldb) under the blockstore: the three persistent
// datastores boxo sits on were measured in one run with the storage
// benchmarks (2 cores; `go test -bench 'Datastore|Checkpoint' ./storage`):
// writing and re-reading a 2NN checkpoint with a durable sync each time,
// LevelDB moved 161 MB/s, flatfs (kubo's block layout, mounted under a
// metadata store) 102 MB/s and pebble 96 MB/s; reading a 100 MB checkpoint
// back, LevelDB gave 1,048 MB/s, flatfs 690 MB/s and pebble 366 MB/s (pebble
// pays for values of 256 KiB going through its LSM blocks on every read).
// LevelDB's journal gives the crash safety a store needs (a synced write
// survives kill -9), it keeps pins and quarantine in the same database as
// the blocks (one atomic batch when a corrupt block is moved), and its
// compression is turned off because float32 shards do not compress.
//
// Durability: writes are not synced one by one; Pin syncs, so a committed
// checkpoint is on disk before it is pinned, and a crash loses at most
// blocks that were never pinned (which GC would remove anyway).
//
// Collection: GC keeps pinned and kept roots whole, every ledger block it
// is given with the manifests its lineage links to (tensors only for blocks
// from Collection.TensorsFrom on), and objects at or above
// Collection.InFlightFrom; everything else goes. The lineage, and who
// contributed what, stays auditable after the tensors are gone.
//
// Concurrency: Store is safe for concurrent use; encoding, hashing and
// decoding of a checkpoint's shards run on all cores, each into its own
// slot, so results do not depend on scheduling. Writes of several blocks
// that belong together (shards, then their manifest) and GC exclude each
// other.
package storage
