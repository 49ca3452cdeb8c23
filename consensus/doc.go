// Package consensus is murmur's BFT state machine: Tendermint's algorithm
// (Buchman, Kwon and Milosevic 2018) over opaque values, so that every honest
// validator decides the same value (the block naming the aggregated model)
// at every height.
//
// It is pure (DESIGN.md §2): no goroutines, clocks, I/O, context or global
// randomness. Time enters as Tick() calls, the network as Step(message),
// the application's values as Propose(value) and its judgement of a value
// as the Validity callback. Signing is an injected Signer.
//
// How it is driven (the Ready loop, as in etcd raft):
//
//	m.Step(msg) / m.Tick() / m.Propose(v) / m.Recheck()
//	rd := m.Ready()
//	1. append rd.Persist to the write-ahead log and fsync it;
//	2. only then send rd.Send to the other validators (a signed vote or
//	   proposal is durable before it leaves the peer);
//	3. apply rd.Decided in order (each with its commit certificate) and
//	   append it to the ledger (package consensus/ledger), report
//	   rd.Evidence, answer each rd.Behind with that height's commit from
//	   the ledger, and if rd.NeedValue is set, call Propose.
//
// After a crash the shell reads the log back (package consensus/wal) and
// passes its records to Restore before anything else: the machine then
// knows every vote and proposal it signed and never signs a different one
// for the same height, round and step.
//
// Envelopes with an empty To go to every validator. Every RebroadcastTicks
// the machine sends its own messages of the current height again (and
// relays the current proposal): gossip delivers a message once, and a
// validator that was cut off needs them to make progress. A validator that
// is behind catches up from commits (value plus certificate) fed to Step in
// height order.
//
// Equivocation: a second, different vote of one validator for one height,
// round and step is surfaced as Evidence and still counted for the value it
// names, so that every honest validator that has received the same messages
// sees the same quorums whatever order they arrived in (see voteSet).
//
// The rules: propose, prevote, precommit; a value is locked when the
// validator precommits it and unlocked only by a later proof of lock
// (2/3+ prevotes in a later round); nil votes on timeout or invalid values;
// timeouts (in ticks) grow linearly with the round; quorums are 2/3+ of
// voting power; the proposer of (height, round) comes from a pure weighted
// round-robin over the validator set.
package consensus
