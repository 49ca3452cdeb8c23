// Package daemon assembles one complete murmur peer from its parts and
// runs it: the libp2p host (or an injected in-memory one), the network's
// kad-dht and mDNS discovery, gossipsub with the announcement, consensus
// and heads validators, bitswap, the validating LevelDB block store, the
// consensus write-ahead log and ledger, the local MNIST trainer with its
// privacy budget, and the node shell that drives the round. `peer start`
// and the full-stack simulator build their peers here, so a simulated peer
// is the same code as a real one; DESIGN.md §4 names cmd/peer as the only
// place real implementations meet, and this package is that wiring, shared.
//
// What it owns:
//
//   - Genesis (genesis.json): what a network's peers must agree on —
//     validators, trainers, the genesis model (checked by CID), the
//     aggregation rule, training, DP, codec and round timing.
//   - Config (config.toml): one peer's own setting, with MURMUR_<SECTION>_<KEY>
//     environment overrides; errors name the file or variable, the key and
//     what is allowed.
//   - Peer: New restores a peer to where its last run stopped — the ledger
//     is repaired from the write-ahead log (a crash between the two writes),
//     the consensus machine is rebuilt from the log, the privacy budget from
//     data/privacy.json — and Run drives it until its context ends, then
//     closes everything in reverse order (writes finished, store closed).
//   - The HTTP API (Handler, ServeAPI): /status, /metrics, /block/{cid},
//     /commit/{height}, /import, /healthz, on loopback unless allowed
//     otherwise.
//   - The store's upkeep: retention on every commit, and every gc_every
//     heights a garbage collection (one at a time, off the shell's
//     goroutine) that keeps the ledger's lineage manifests, recent tensors
//     and work in flight.
//   - The range protocol that serves runs of committed heights to peers
//     catching up (p2p.ServeRange over the ledger's commits), and the DAG
//     protocol that serves updates and models to whoever asks their author
//     or publisher first (p2p.ServeDAG; bitswap is the fallback).
//
// A home folder holds config.toml, genesis.json, key, store/ (LevelDB) and
// data/ (wal, ledger, privacy.json).
package daemon
