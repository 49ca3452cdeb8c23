// Package consensus is the pure Tendermint-style BFT state machine that makes
// every honest validator agree on each height's block: Step(message),
// Tick() and Propose(value) in, Ready() {Persist, Send, Decided} out, with a
// write-ahead log the shell fsyncs before sending.
//
// Standard library only; no goroutines, clocks, I/O, context or global
// randomness (DESIGN.md §2, §4).
//
// Status: specified by issue 3/6 and not written yet; nothing imports it.
package consensus
