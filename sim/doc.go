// Package sim runs many murmur peers in one process.
//
// This first version (issue 1/6) simulates the learning only: N peers, each
// with its own partition of the training set, run rounds of seeded local
// training from the shared model, optional differential privacy, optional
// Byzantine behaviour, and aggregation. Every honest peer aggregates the
// round's updates itself, in its own (shuffled) arrival order, and the run
// checks that all of them reach the same model hash: the determinism contract
// of DESIGN.md §2 exercised on every round. Networking, storage and consensus
// are not in the loop yet; issue 6/6 replaces Run's insides with full peers
// over an in-memory libp2p network and keeps this Config and Report.
//
// How it is driven: Run(ctx, cfg, train, test, observe) runs to completion,
// calling observe after each round from the calling goroutine. Local training
// of the peers of a round runs on a bounded pool of goroutines; each peer's
// randomness comes from its own generator derived from (seed, peer, round), so
// results do not depend on scheduling.
package sim
