package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/murmur-ml/murmur/consensus"
	"github.com/murmur-ml/murmur/consensus/ledger"
	"github.com/murmur-ml/murmur/learner"
	"github.com/murmur-ml/murmur/shard"
	"github.com/murmur-ml/murmur/storage"
)

// Network is what the shell needs from the peer-to-peer layer (p2p's gossip
// and bitswap satisfy it through a thin adapter where they are wired).
type Network interface {
	// Announce publishes this peer's update for a height.
	Announce(ctx context.Context, height uint64, update cid.Cid, samples uint64) error
	// Announcements delivers validated announcements until ctx ends.
	Announcements(ctx context.Context) (<-chan Announced, error)
	// Broadcast publishes a consensus payload; Consensus delivers the
	// validated ones.
	Broadcast(ctx context.Context, payload []byte) error
	Consensus(ctx context.Context) (<-chan []byte, error)
	// Fetch brings root and its content into the local store.
	Fetch(ctx context.Context, root cid.Cid) error
}

// Store is what the shell needs from storage (storage.Store satisfies it).
type Store interface {
	GetCheckpoint(ctx context.Context, c cid.Cid) (*storage.Checkpoint, storage.Model, error)
	PutCheckpoint(ctx context.Context, m storage.Model, meta storage.CheckpointMeta) (cid.Cid, error)
	PutUpdate(ctx context.Context, in storage.UpdateInput, signer storage.Signer) (cid.Cid, error)
	GetUpdate(ctx context.Context, c cid.Cid, layers []storage.Layer) (*storage.Update, []float32, error)
	PutObject(ctx context.Context, obj any) (cid.Cid, error)
	Pin(ctx context.Context, c cid.Cid, height uint64) error
}

// Trainer trains a copy of the model from base params and returns the
// update and the samples it used (learner.Train on local data, wrapped).
type Trainer interface {
	Train(ctx context.Context, height uint64, base []float32) (delta []float32, samples int, err error)
}

// Log is the consensus write-ahead log (consensus/wal, wrapped).
type Log interface {
	Append(records ...[]byte) error
	Sync() error
}

// catchUpBatch is how many consecutive commits answer one Behind.
const catchUpBatch = 16

// Shell runs a Core: it owns the core (one goroutine), turns the network,
// a ticker and finished work into events, and carries out effects.
type Shell struct {
	Core    *Core
	Net     Network
	Store   Store
	Trainer Trainer // nil for a validator that does not train
	WAL     Log
	Ledger  *ledger.Ledger // decided heights: appended on commit, read to help peers catch up
	Signer  storage.Signer
	Agg     learner.AggConfig
	Codec   shard.Codec // how updates are encoded (default dense)
	TopK    float64     // kept fraction with the top-k codec
	Tick    time.Duration
	Log     *slog.Logger
	// OnCommit, if set, is told of every commit (after it is stored).
	OnCommit func(Commit)
}

// Run drives the core until ctx ends. Blocking work (training, fetching,
// aggregating) runs on its own goroutines and comes back as events; the
// core itself is touched by this goroutine only.
func (s *Shell) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	anns, err := s.Net.Announcements(ctx)
	if err != nil {
		return err
	}
	cons, err := s.Net.Consensus(ctx)
	if err != nil {
		return err
	}
	done := make(chan any, 64) // results of background work
	ticker := time.NewTicker(s.Tick)
	defer ticker.Stop()
	if err := s.apply(ctx, s.Core.Start(), done); err != nil {
		return err
	}
	for {
		var ev any
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			ev = Tick{}
		case a := <-anns:
			ev = a
		case b := <-cons:
			msg, err := consensus.Decode(b)
			if err != nil {
				continue // the gossip validator should have refused it
			}
			ev = ConsensusMsg{Msg: msg}
		case ev = <-done:
			if err, ok := ev.(error); ok {
				return err
			}
		}
		effects, err := s.Core.Step(ev)
		if err != nil && !errors.Is(err, consensus.ErrInvalid) {
			return err
		}
		if err := s.apply(ctx, effects, done); err != nil {
			return err
		}
	}
}

// apply carries out effects in order: durable records before messages.
func (s *Shell) apply(ctx context.Context, effects []any, done chan<- any) error {
	for _, e := range effects {
		switch f := e.(type) {
		case Persist:
			recs := make([][]byte, len(f.Records))
			for i, r := range f.Records {
				recs[i] = consensus.EncodeRecord(r)
			}
			if err := s.WAL.Append(recs...); err != nil {
				return fmt.Errorf("node: wal: %w", err)
			}
			if err := s.WAL.Sync(); err != nil {
				return fmt.Errorf("node: wal sync: %w", err)
			}
		case Send:
			for _, env := range f.Envelopes {
				if err := s.Net.Broadcast(ctx, consensus.Encode(env.Msg)); err != nil && ctx.Err() == nil {
					s.Log.Warn("broadcast failed", "err", err)
				}
			}
		case Train:
			if s.Trainer != nil {
				go s.train(ctx, f, done)
			}
		case Announce:
			if err := s.Net.Announce(ctx, f.Height, f.Update, f.Samples); err != nil && ctx.Err() == nil {
				s.Log.Warn("announce failed", "err", err)
			}
		case Fetch:
			go func() {
				if err := s.Net.Fetch(ctx, f.Update); err != nil {
					s.Log.Debug("fetch failed", "update", f.Update, "err", err)
					return // asked again if a block needs it
				}
				send(ctx, done, Fetched{Update: f.Update})
			}()
		case Aggregate:
			go s.aggregate(ctx, f, done)
		case Commit:
			if err := s.Ledger.Append(consensus.Commit{Value: f.BlockBytes, Certificate: f.Certificate}); err != nil {
				return fmt.Errorf("node: ledger: %w", err)
			}
			if _, err := s.Store.PutObject(ctx, f.Block); err != nil {
				return fmt.Errorf("node: storing block %d: %w", f.Height, err)
			}
			// A peer that caught up from a commit did not compute the
			// result itself: fetch it (a no-op when it is local).
			if err := s.Net.Fetch(ctx, f.Block.Result.Cid); err != nil {
				return fmt.Errorf("node: fetching the result of %d: %w", f.Height, err)
			}
			if err := s.Store.Pin(ctx, f.Block.Result.Cid, f.Height); err != nil {
				return fmt.Errorf("node: pinning result of %d: %w", f.Height, err)
			}
			if s.OnCommit != nil {
				s.OnCommit(f)
			}
		case Behind:
			// Send a run of commits from its height on, so a peer far behind
			// catches up in one exchange rather than one per height.
			for h := f.Height; h < f.Height+catchUpBatch; h++ {
				c, ok := s.Ledger.Commit(h)
				if !ok {
					break
				}
				if err := s.Net.Broadcast(ctx, consensus.Encode(&c)); err != nil && ctx.Err() == nil {
					s.Log.Warn("broadcast failed", "err", err)
				}
			}
		case Evidence:
			s.Log.Warn("equivocation", "validator", f.Evidence.A.Validator, "height", f.Evidence.A.Height)
		}
	}
	return nil
}

func send(ctx context.Context, ch chan<- any, v any) {
	select {
	case ch <- v:
	case <-ctx.Done():
	}
}

func (s *Shell) train(ctx context.Context, f Train, done chan<- any) {
	ck, m, err := s.Store.GetCheckpoint(ctx, f.Base)
	if err != nil {
		send(ctx, done, fmt.Errorf("node: base model %s: %w", f.Base, err))
		return
	}
	delta, samples, err := s.Trainer.Train(ctx, f.Height, m.Params)
	if err != nil {
		s.Log.Warn("training failed; not contributing this height", "height", f.Height, "err", err)
		return
	}
	codec := s.Codec
	if codec == 0 {
		codec = shard.Dense
	}
	c, err := s.Store.PutUpdate(ctx, storage.UpdateInput{Network: s.Core.cfg.Network, Height: f.Height, Base: f.Base,
		Layers: ck.Layers, Delta: delta, Samples: samples, Codec: codec, TopK: s.TopK}, s.Signer)
	if err != nil {
		send(ctx, done, fmt.Errorf("node: storing update: %w", err))
		return
	}
	send(ctx, done, Trained{Height: f.Height, Update: c, Samples: uint64(samples)})
}

// aggregate re-executes the rule on the listed updates, exactly as every
// validator does, and stores the result checkpoint.
func (s *Shell) aggregate(ctx context.Context, f Aggregate, done chan<- any) {
	ck, base, err := s.Store.GetCheckpoint(ctx, f.Base)
	if err != nil {
		send(ctx, done, fmt.Errorf("node: base model %s: %w", f.Base, err))
		return
	}
	ups := make([]learner.Update, len(f.Updates))
	for i, c := range f.Updates {
		u, delta, err := s.Store.GetUpdate(ctx, c, ck.Layers)
		if err != nil {
			s.Log.Warn("update unreadable", "update", c, "err", err)
			return
		}
		ups[i] = learner.Update{ID: c.String(), Delta: delta, Samples: u.Samples}
	}
	agg, err := learner.Aggregate(s.Agg, ups)
	if err != nil {
		s.Log.Warn("aggregation failed", "height", f.Height, "err", err)
		return
	}
	res, err := s.Store.PutCheckpoint(ctx, storage.Model{Arch: base.Arch, Layers: base.Layers, Params: learner.Apply(base.Params, agg)},
		storage.CheckpointMeta{Height: f.Height, Parent: f.Base})
	if err != nil {
		send(ctx, done, fmt.Errorf("node: storing aggregate: %w", err))
		return
	}
	send(ctx, done, Aggregated{Height: f.Height, Base: f.Base, Updates: f.Updates, Result: res})
}
