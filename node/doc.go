// Package node is one peer's round pipeline (DESIGN.md §1): a deterministic
// Step(event) core that decides what to train, store, announce, fetch,
// propose, re-execute and vote on, and a thin Run(ctx) shell that carries its
// effects out through small interfaces (Transport, Store, Trainer, Tracer)
// that p2p, storage and learner satisfy.
//
// Status: specified by issue 5/6 and not written yet; nothing imports it.
package node
