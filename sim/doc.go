// Package sim runs many murmur peers in one process, two ways.
//
// RunNetwork is the full stack: N complete peers built by package daemon —
// node core and shell, consensus with write-ahead logs and ledgers,
// validating stores, gossipsub with validators, bitswap, the gorgonia
// trainer with its privacy budget — over an in-memory libp2p network
// (mocknet) with latency, bandwidth and gossip loss on every link and
// per-link overrides (loss drops a message arriving over that link before
// it is validated; block transfers are reliable streams).
// A Network adds a timeline of faults (crash, restart, partition, heal, a
// late join), peers whose aggregates lie, silent proposers, equivocating
// validators, spammer
// hosts outside the genesis, a validator committee and a sparse topology,
// and update codecs; a Scenario file (TOML) carries one. Trainings are
// limited to one per core (the peers share this machine's cores).
// Peer identities, data partitions, training, DP noise and, because
// proposers wait for every listed trainer, block contents all follow from
// the seed: the same seed and fault-free scenario give the same head CIDs.
// Byzantine trainers run the attacks of package learner on their own
// update; for ALIE and IPM they collude, forging from the height's honest
// updates (an omniscient adversary). DP-SGD runs in the learning-only
// engine only.
//
// Run is the learning-only engine (issue 1/6): the same training,
// aggregation and DP without network, storage or consensus, every honest
// peer aggregating in its own shuffled order and checking bit-identical
// results. It is fast, so the attack matrix uses it.
//
// Both return a Report of Rounds; WriteOutput turns one into rounds.csv,
// report.json, PNG and SVG plots and a self-contained report.html.
//
// How it is driven: RunNetwork and Run run to completion, calling observe
// after each committed round from the calling goroutine. Randomness comes
// from generators derived from (seed, peer, round, purpose).
package sim
