// Package node is one peer's round pipeline (DESIGN.md §1) as a
// deterministic core: Core.Step(event) returns the effects to carry out, in
// order, and owns no goroutine, clock, network or disk. Shell.Run(ctx) feeds
// it events from gossip, the trainer, the store and a ticker, and executes
// its effects through small interfaces declared here (Network, Store,
// Trainer, Log) that p2p, storage, learner and consensus/wal satisfy
// through thin adapters where they are wired.
//
// One height h, as the core sees it:
//
//  1. With head M_h committed, a trainer emits Train{h, M_h}; when the
//     shell reports Trained (the update stored), it emits Announce. With
//     Privacy set the shell spends the budget first and clips and noises
//     the update, or with PerExample has a PrivateTrainer run DP-SGD.
//  2. Announced updates for h are collected; each unknown one is fetched
//     (Fetch, then Fetched).
//  3. The consensus machine runs (package consensus). When this validator
//     proposes and the collection window (CollectTicks) has closed, the
//     core asks for the aggregate of the collected updates (Aggregate, then
//     Aggregated) and proposes the block {height, base, sorted updates,
//     rule, result}.
//  4. Every validator judges a proposed block by re-executing it: it
//     answers NotYet until it holds every listed update and has computed
//     the aggregate of exactly those updates on the same base itself, then
//     Accept only if its own result equals the block's. A proposer that
//     lies about the result gets nil prevotes and the next round's proposer
//     decides instead.
//  5. On decision the core emits Commit{block, certificate}: the shell
//     appends the ledger, stores the block, fetches the result if it did
//     not compute it (a peer catching up), pins it; the head moves to the
//     block's result and height h+1 starts.
//  6. A validator that is behind (its votes arrive for a height decided
//     here) gets Behind: the shell broadcasts a run of commits from the
//     ledger; the consensus machine applies them in order after checking
//     their certificates, so it never adopts a head without one.
//  7. Every validator publishes each commit on the heads topic (and again
//     every HeadTicks). A peer that learns of a commit beyond its height —
//     a trainer that does not vote, a peer that starts late or restarts —
//     emits Sync; the shell fetches a run of commits from a peer over the
//     range protocol and feeds them back as Committed. Each certificate is
//     checked against the validator set and each block must build on the
//     head, so the chain is verified back to what the peer trusts; the
//     peer trains once, on the last head.
//
// The proposer waits at most CollectTicks for updates; it proposes earlier
// once every trainer active in the last ActiveWindow heights has delivered
// (or ExpectedUpdates are in: a closed set, for reproducible blocks). A
// trainer not yet counted active (new, back, or caught up) emits Intend with
// its first Train: an announcement without an update, which counts it
// active at once, so the next block waits for its update. Intents count
// only while some trainer is active by a delivered update (at the first
// height the window is waited out), and an author whose last intent was
// not followed by an update is not believed again until one comes. An
// intent honoured late in a height stretches the window to a full one from
// its arrival (at most twice the window, and short of the propose
// timeout), so a peer that caught up mid-height has the time to train.
// Restore puts a core where its write-ahead log and ledger say it was.
//
// Effects that must be durable before others (consensus records before
// messages) come first in the returned slice; the shell runs them in order.
package node
