package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
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
	// Announce publishes this peer's update for a height; with update
	// cid.Undef (and no samples) an intent to train for it.
	Announce(ctx context.Context, height uint64, update cid.Cid, samples uint64) error
	// Announcements delivers validated announcements until ctx ends.
	Announcements(ctx context.Context) (<-chan Announced, error)
	// Broadcast publishes a consensus payload; Consensus delivers the
	// validated ones.
	Broadcast(ctx context.Context, payload []byte) error
	Consensus(ctx context.Context) (<-chan []byte, error)
	// Fetch brings root and its content into the local store.
	Fetch(ctx context.Context, root cid.Cid) error
	// PublishHead publishes a commit (encoded) on the heads topic; Heads
	// delivers the validated ones.
	PublishHead(ctx context.Context, commit []byte) error
	Heads(ctx context.Context) (<-chan []byte, error)
	// FetchCommits asks peers for the commits from height on (encoded).
	FetchCommits(ctx context.Context, from uint64) ([][]byte, error)
}

// Store is what the shell needs from storage (storage.Store satisfies it).
type Store interface {
	GetCheckpoint(ctx context.Context, c cid.Cid) (*storage.Checkpoint, storage.Model, error)
	PutCheckpoint(ctx context.Context, m storage.Model, meta storage.CheckpointMeta) (cid.Cid, error)
	PutUpdate(ctx context.Context, in storage.UpdateInput, signer storage.Signer) (cid.Cid, error)
	GetUpdate(ctx context.Context, c cid.Cid, layers []storage.Layer) (*storage.Update, []float32, error)
	PutObject(ctx context.Context, obj any) (cid.Cid, error)
	Pin(ctx context.Context, c cid.Cid, height uint64) error
	Has(ctx context.Context, c cid.Cid) (bool, error)
}

// Trainer trains a copy of the model from base params and returns the
// update and the samples it used (learner.Train on local data, wrapped).
type Trainer interface {
	Train(ctx context.Context, height uint64, base []float32) (delta []float32, samples int, err error)
}

// PrivateTrainer is a Trainer that can run DP-SGD (learner.TrainDP): clip
// every example's gradient to dp.Clip and add N(0, (dp.Sigma·Clip)²) noise
// from noise at every step. Privacy.PerExample needs one.
type PrivateTrainer interface {
	Trainer
	TrainPrivate(ctx context.Context, height uint64, base []float32, dp learner.DPConfig, noise *rand.Rand) (delta []float32, samples int, err error)
}

// Log is the consensus write-ahead log (consensus/wal, wrapped).
type Log interface {
	Append(records ...[]byte) error
	Sync() error
}

// backoff times a republication: HeadTicks after the original, then
// twice as long each time, up to 8 × HeadTicks. A network that is quiet
// (stalled, or waiting on a slow trainer) is not flooded by every peer
// repeating itself, while a message that went out before the mesh formed
// is repeated soon. The zero value never fires.
type backoff struct{ gap, left, base int }

func (b *backoff) reset(base int) { b.base, b.gap, b.left = base, base, base }

// due counts one tick and reports whether a republication is due.
func (b *backoff) due() bool {
	if b.base <= 0 {
		return false
	}
	if b.left--; b.left > 0 {
		return false
	}
	b.gap = min(2*b.gap, 8*b.base)
	b.left = b.gap
	return true
}

// catchUpBatch is how many consecutive commits answer one Behind.
const catchUpBatch = 16

// Privacy is a trainer's differential privacy: every update is clipped and
// noised (or, PerExample, trained with DP-SGD), and the trainer stops
// contributing once the next update would take its ε past the budget.
type Privacy struct {
	DP     learner.DPConfig
	Budget *learner.Budget
	Noise  *rand.Rand // a CSPRNG (learner.NewNoiseRand)
	// PerExample is DP-SGD: the Trainer (a PrivateTrainer) clips each
	// example's gradient and noises every local step, and the update leaves
	// as trained. Otherwise the whole update is clipped and noised.
	PerExample bool
	// Rate and Steps are what one update costs the accountant: Steps runs of
	// the sampled Gaussian mechanism at sampling rate Rate (DP-SGD: the
	// batch over the local data, the local steps). Zero: one run at rate 1,
	// an update.
	Rate  float64
	Steps int
	// Spent, if set, is told the number of updates released so far, before
	// the update is announced, so a restarted peer does not forget them.
	Spent func(released int) error
}

// cost is what one update spends: sampling rate and runs.
func (p *Privacy) cost() (float64, int) {
	if p.Rate == 0 {
		return 1, 1
	}
	return p.Rate, max(p.Steps, 1)
}

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
	Privacy *Privacy    // nil: updates are not privatised
	Tick    time.Duration
	// HeadTicks is how often a validator republishes its latest commit on
	// the heads topic (0: only when it commits).
	HeadTicks int
	Log       *slog.Logger
	// OnCommit, if set, is told of every commit (after it is stored); OnStep
	// after every event, on the shell's goroutine (to read the core).
	OnCommit   func(Commit)
	OnStep     func(*Core)
	OnEvidence func(consensus.Evidence)
	// OnAggregate, if set, is told how long each re-execution of the rule
	// took (reading the updates, the rule, storing the result); it is
	// called from the background goroutine that did the work.
	OnAggregate func(height uint64, updates int, took time.Duration)

	wg sync.WaitGroup // background work, waited for before Run returns

	training  bool           // a training run is under way
	queued    *Train         // the newest request that waits for it
	residual  shard.Residual // top-k error feedback (the training run's)
	released  int            // updates released under Privacy
	exhausted bool
	lastHead  []byte    // the latest commit, encoded, for republishing
	announced *Announce // this peer's announcement at the current height, republished
	headEvery backoff   // when to republish lastHead
	annEvery  backoff   // when to republish announced
}

// Run drives the core until ctx ends. Blocking work (training, fetching,
// aggregating) runs on its own goroutines and comes back as events; the
// core itself is touched by this goroutine only.
func (s *Shell) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	// Background work ends with ctx; wait for it so the caller can close
	// the store under no writer.
	defer s.wg.Wait()
	defer cancel()
	if p := s.Privacy; p != nil && p.PerExample && s.Trainer != nil {
		if _, ok := s.Trainer.(PrivateTrainer); !ok {
			return fmt.Errorf("%w: DP-SGD (per-example privacy) needs a trainer that can run it; %T cannot", ErrConfig, s.Trainer)
		}
	}
	anns, err := s.Net.Announcements(ctx)
	if err != nil {
		return err
	}
	cons, err := s.Net.Consensus(ctx)
	if err != nil {
		return err
	}
	heads, err := s.Net.Heads(ctx)
	if err != nil {
		return err
	}
	ticks := 0
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
			ticks++
			if s.headEvery.due() && s.lastHead != nil && s.Core.cfg.Validator {
				s.publishHead(ctx, s.lastHead)
			}
			// An announcement published before the gossip mesh had formed
			// reached nobody: publish it again (a new gossip message each
			// time; receivers take it once).
			if s.annEvery.due() {
				if a := s.announced; a != nil && a.Height == s.Core.Height() {
					if err := s.Net.Announce(ctx, a.Height, a.Update, a.Samples); err != nil && ctx.Err() == nil {
						s.Log.Debug("re-announce failed", "err", err)
					}
				}
			}
		case b := <-heads:
			msg, err := consensus.Decode(b)
			cm, ok := msg.(*consensus.Commit)
			if err != nil || !ok {
				continue // the gossip validator should have refused it
			}
			ev = Committed{Commit: *cm}
		case a := <-anns:
			s.Log.Debug("update announced", "author", a.Author, "height", a.Height, "at_height", s.Core.Height())
			ev = a
		case b := <-cons:
			msg, err := consensus.Decode(b)
			if err != nil {
				continue // the gossip validator should have refused it
			}
			ev = ConsensusMsg{Msg: msg}
		case ev = <-done:
			if t, ok := ev.(trainingDone); ok {
				if ev, err = s.trained(ctx, t, done); err != nil {
					return err
				}
				if ev == nil {
					continue
				}
			}
			if err, ok := ev.(error); ok {
				return err
			}
		}
		effects, err := s.Core.Step(ev)
		if err != nil && !errors.Is(err, consensus.ErrInvalid) {
			return err
		}
		if s.OnStep != nil {
			s.OnStep(s.Core)
		}
		if err := s.apply(ctx, effects, done); err != nil {
			if ctx.Err() != nil {
				return nil // stopping: the effect was cut short, and is redone after a restart
			}
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
			if s.Trainer == nil || s.exhausted {
				break
			}
			if s.training {
				// One training at a time. A newer head replaces a request
				// still waiting: training on a head that is already
				// stale only queues up behind a slow trainer (each
				// result too late for its height) and spends privacy
				// budget for nothing.
				s.queued = &f
				break
			}
			if err := s.startTraining(ctx, f, done); err != nil {
				return err
			}
		case Announce:
			s.Log.Debug("announcing update", "height", f.Height, "update", f.Update, "at_height", s.Core.Height())
			s.announced = &f
			s.annEvery.reset(s.HeadTicks)
			if err := s.Net.Announce(ctx, f.Height, f.Update, f.Samples); err != nil && ctx.Err() == nil {
				s.Log.Warn("announce failed", "err", err)
			}
		case Intend:
			if s.Trainer == nil || s.exhausted {
				break // it will not train: promising an update would only make proposers wait
			}
			s.Log.Debug("announcing intent to train", "height", f.Height)
			if err := s.Net.Announce(ctx, f.Height, cid.Undef, 0); err != nil && ctx.Err() == nil {
				s.Log.Warn("announcing intent failed", "err", err)
			}
		case Fetch:
			s.spawn(func() {
				if err := s.Net.Fetch(ctx, f.Update); err != nil {
					s.Log.Debug("fetch failed", "update", f.Update, "err", err)
					send(ctx, done, FetchFailed{Update: f.Update})
					return
				}
				send(ctx, done, Fetched{Update: f.Update})
			})
		case Aggregate:
			s.Log.Debug("aggregating", "height", f.Height, "updates", len(f.Updates))
			s.spawn(func() { s.aggregate(ctx, f, done) })
		case Commit:
			if err := s.Ledger.Append(consensus.Commit{Value: f.BlockBytes, Certificate: f.Certificate}); err != nil {
				return fmt.Errorf("node: ledger: %w", err)
			}
			if _, err := s.Store.PutObject(ctx, f.Block); err != nil {
				return fmt.Errorf("node: storing block %d: %w", f.Height, err)
			}
			// A peer that caught up from a commit did not compute the
			// result itself: fetch it in the background (training on it
			// fetches it too, whichever comes first) and pin it once here.
			if ok, err := s.Store.Has(ctx, f.Block.Result.Cid); err != nil {
				return fmt.Errorf("node: store: %w", err)
			} else if ok {
				if err := s.Store.Pin(ctx, f.Block.Result.Cid, f.Height); err != nil {
					return fmt.Errorf("node: pinning result of %d: %w", f.Height, err)
				}
			} else {
				s.spawn(func() { s.fetchAndPin(ctx, f.Block.Result.Cid, f.Height) })
			}
			s.lastHead = consensus.Encode(&consensus.Commit{Value: f.BlockBytes, Certificate: f.Certificate})
			s.headEvery.reset(s.HeadTicks)
			if s.Core.cfg.Validator {
				s.publishHead(ctx, s.lastHead)
			}
			if s.OnCommit != nil {
				s.OnCommit(f)
			}
		case Sync:
			s.spawn(func() { s.sync(ctx, f.Height, done) })
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
			if s.OnEvidence != nil {
				s.OnEvidence(f.Evidence)
			}
		}
	}
	return nil
}

func (s *Shell) fetchAndPin(ctx context.Context, c cid.Cid, height uint64) {
	if err := s.Net.Fetch(ctx, c); err != nil {
		s.Log.Warn("fetching a committed model failed; it is fetched again before training on it", "height", height, "cid", c, "err", err)
		return
	}
	if err := s.Store.Pin(ctx, c, height); err != nil && ctx.Err() == nil {
		s.Log.Warn("pinning a committed model failed", "height", height, "cid", c, "err", err)
	}
}

func (s *Shell) spawn(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

func (s *Shell) publishHead(ctx context.Context, b []byte) {
	if err := s.Net.PublishHead(ctx, b); err != nil && ctx.Err() == nil {
		s.Log.Debug("publishing head failed", "err", err)
	}
}

// sync fetches a run of commits from height on and feeds them back in
// order; the core checks each certificate.
func (s *Shell) sync(ctx context.Context, height uint64, done chan<- any) {
	items, err := s.Net.FetchCommits(ctx, height)
	if err != nil {
		s.Log.Debug("fetching commits failed", "from", height, "err", err)
		return
	}
	for _, b := range items {
		msg, err := consensus.Decode(b)
		cm, ok := msg.(*consensus.Commit)
		if err != nil || !ok {
			s.Log.Warn("a peer sent a malformed commit while we caught up", "err", err)
			return
		}
		send(ctx, done, Committed{Commit: *cm})
	}
}

// PrivacyExhausted reports whether this peer stopped contributing because
// its privacy budget is spent (read it from OnStep).
func (s *Shell) PrivacyExhausted() bool { return s.exhausted }

// Released is how many privatised updates this peer has released.
func (s *Shell) Released() int { return s.released }

// Restore sets how many privatised updates an earlier run released
// (before Run), replaying them into the budget.
func (s *Shell) Restore(released int) error {
	if s.Privacy == nil {
		return nil
	}
	q, steps := s.Privacy.cost()
	for range released {
		if err := s.Privacy.Budget.Spend(s.Privacy.DP.Sigma, q, steps); err != nil {
			s.exhausted = true
			break
		}
	}
	s.released = released
	return nil
}

func send(ctx context.Context, ch chan<- any, v any) {
	select {
	case ch <- v:
	case <-ctx.Done():
	}
}

// base reads a committed model, fetching it first if a crash came between
// committing it and storing it.
func (s *Shell) base(ctx context.Context, c cid.Cid) (*storage.Checkpoint, storage.Model, error) {
	ck, m, err := s.Store.GetCheckpoint(ctx, c)
	if err == nil {
		return ck, m, nil
	}
	if ferr := s.Net.Fetch(ctx, c); ferr != nil {
		return nil, storage.Model{}, errors.Join(err, ferr)
	}
	return s.Store.GetCheckpoint(ctx, c)
}

// privateRun is one update's privatisation, fixed on the shell goroutine.
type privateRun struct {
	cfg        learner.DPConfig
	epsilon    float64
	noise      *rand.Rand
	perExample bool
}

func seedFrom(r *rand.Rand) [32]byte {
	var s [32]byte
	for i := 0; i < 32; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			s[i+j] = byte(v >> (8 * j))
		}
	}
	return s
}

// trainingDone marks the end of a training run; result is its Trained
// event, or nil when it did not contribute.
type trainingDone struct {
	result  any
	private bool // the update is privatised: charge the budget when it is released
}

// startTraining checks that the privacy budget affords one more update (if
// private) and trains in the background; the run ends with a trainingDone.
func (s *Shell) startTraining(ctx context.Context, f Train, done chan<- any) error {
	var dp *privateRun
	if p := s.Privacy; p != nil {
		q, steps := p.cost()
		if !p.Budget.CanSpend(p.DP.Sigma, q, steps) {
			s.exhausted = true
			s.Log.Warn("privacy budget spent: this peer stops contributing updates",
				"epsilon_spent", p.Budget.Spent(), "epsilon_budget", p.Budget.Epsilon, "updates", s.released)
			return nil
		}
		// The update records the ε its author will have spent once it is
		// released; the budget is charged then (trained), not now: a
		// training that comes back too late is never released and costs
		// nothing.
		eps, err := p.Budget.After(p.DP.Sigma, q, steps)
		if err != nil {
			return fmt.Errorf("node: privacy budget: %w", err)
		}
		dp = &privateRun{cfg: p.DP, epsilon: eps, noise: rand.New(rand.NewChaCha8(seedFrom(p.Noise))), perExample: p.PerExample}
	}
	s.training = true
	s.spawn(func() {
		res := s.train(ctx, f, dp)
		send(ctx, done, trainingDone{result: res, private: dp != nil})
	})
	return nil
}

// trained handles the end of a training run: a private update that will
// be announced is charged to the budget (durably, before it can leave),
// one that came back too late for its height is dropped unreleased; then
// the next queued request starts, and the result (if any) becomes the
// core's event.
func (s *Shell) trained(ctx context.Context, t trainingDone, done chan<- any) (any, error) {
	s.training = false
	res := t.result
	if tr, ok := res.(Trained); ok && t.private {
		if tr.Height+1 < s.Core.Height() {
			s.Log.Debug("training came back too late; dropped unreleased, no privacy spent", "height", tr.Height, "at_height", s.Core.Height())
			res = nil
		} else if err := s.spend(); err != nil {
			return nil, err
		}
	}
	if q := s.queued; q != nil {
		s.queued = nil
		if err := s.startTraining(ctx, *q, done); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// spend charges one update to the privacy budget and records the count
// durably: a crash after the update leaves must not forget it.
func (s *Shell) spend() error {
	p := s.Privacy
	q, steps := p.cost()
	if err := p.Budget.Spend(p.DP.Sigma, q, steps); err != nil {
		return fmt.Errorf("node: privacy budget: %w", err)
	}
	s.released++
	if p.Spent != nil {
		if err := p.Spent(s.released); err != nil {
			return fmt.Errorf("node: recording privacy spend: %w", err)
		}
	}
	return nil
}

// train runs one training and stores the update; it returns the Trained
// event, an error that stops the peer, or nil (no contribution, said why).
// Runs off the shell's goroutine; s.residual is touched only here, and
// runs do not overlap.
func (s *Shell) train(ctx context.Context, f Train, dp *privateRun) any {
	ck, m, err := s.base(ctx, f.Base)
	if err != nil {
		s.Log.Warn("base model unavailable; not contributing this height", "height", f.Height, "base", f.Base, "err", err)
		return nil
	}
	var delta []float32
	var samples int
	if dp != nil && dp.perExample {
		// Run checked that the trainer can.
		delta, samples, err = s.Trainer.(PrivateTrainer).TrainPrivate(ctx, f.Height, m.Params, dp.cfg, dp.noise)
	} else {
		delta, samples, err = s.Trainer.Train(ctx, f.Height, m.Params)
	}
	if err != nil {
		s.Log.Warn("training failed; not contributing this height", "height", f.Height, "err", err)
		return nil
	}
	in := storage.UpdateInput{Network: s.Core.cfg.Network, Height: f.Height, Base: f.Base,
		Layers: ck.Layers, Samples: samples, Codec: s.Codec, TopK: s.TopK}
	if in.Codec == 0 {
		in.Codec = shard.Dense
	}
	if dp != nil {
		if !dp.perExample {
			if delta, err = learner.Privatize(delta, dp.cfg, dp.noise); err != nil {
				return fmt.Errorf("node: privatising: %w", err)
			}
		}
		// With DP-SGD Clip bounds each example's gradient, not the update.
		in.Clip, in.Sigma, in.Epsilon = dp.cfg.Clip, dp.cfg.Sigma, dp.epsilon
	}
	if in.Codec == shard.TopK {
		delta = s.residual.Compensate(delta)
	}
	in.Delta = delta
	c, err := s.Store.PutUpdate(ctx, in, s.Signer)
	if err != nil {
		return fmt.Errorf("node: storing update: %w", err)
	}
	if in.Codec == shard.TopK {
		// Remember what top-k dropped: the next update carries it.
		_, sent, err := s.Store.GetUpdate(ctx, c, ck.Layers)
		if err != nil {
			return fmt.Errorf("node: reading back update: %w", err)
		}
		s.residual.Remember(delta, sent)
	}
	return Trained{Height: f.Height, Update: c, Samples: uint64(samples)}
}

// aggregate re-executes the rule on the listed updates, exactly as every
// validator does, and stores the result checkpoint.
func (s *Shell) aggregate(ctx context.Context, f Aggregate, done chan<- any) {
	start := time.Now()
	ck, base, err := s.base(ctx, f.Base)
	if err != nil {
		s.Log.Warn("base model unavailable; cannot aggregate", "height", f.Height, "base", f.Base, "err", err)
		return
	}
	// An update that is present but unusable (malformed, for another base
	// or network, NaN, no samples) is left out of the rule by every
	// validator alike — the judgement depends on its bytes only — so one
	// bad author cannot stall the round; the block still lists it.
	ups := make([]learner.Update, 0, len(f.Updates))
	for _, c := range f.Updates {
		u, delta, err := s.Store.GetUpdate(ctx, c, ck.Layers)
		if errors.Is(err, storage.ErrNotFound) || ctx.Err() != nil {
			s.Log.Warn("update missing; cannot aggregate yet", "update", c, "err", err)
			return
		}
		if err == nil && (u.Network != s.Core.cfg.Network || u.Height != f.Height || !u.Base.Equals(f.Base)) {
			err = fmt.Errorf("update for %s/%d on %s", u.Network, u.Height, u.Base)
		}
		lu := learner.Update{ID: c.String(), Delta: delta}
		if u != nil {
			lu.Samples = u.Samples
		}
		if err == nil {
			err = learner.ValidateUpdate(lu, len(base.Params))
		}
		if err != nil {
			s.Log.Warn("update left out of the aggregate", "update", c, "err", err)
			continue
		}
		ups = append(ups, lu)
	}
	params := base.Params
	if len(ups) > 0 {
		agg, err := learner.Aggregate(s.Agg, ups)
		if err != nil {
			s.Log.Warn("aggregation failed", "height", f.Height, "err", err)
			return
		}
		var parent []float32
		if s.Agg.ServerMomentum > 0 && ck.Parent != nil {
			// Momentum needs the step that made the base: its parent model.
			_, pm, err := s.base(ctx, ck.Parent.Cid)
			if err != nil {
				s.Log.Warn("parent model unavailable; cannot aggregate with momentum", "height", f.Height, "err", err)
				return
			}
			parent = pm.Params
		}
		params = learner.ApplyMomentum(base.Params, parent, agg, s.Agg.ServerMomentum)
	}
	res, err := s.Store.PutCheckpoint(ctx, storage.Model{Arch: base.Arch, Layers: base.Layers, Params: params},
		storage.CheckpointMeta{Height: f.Height, Parent: f.Base})
	if err != nil {
		send(ctx, done, fmt.Errorf("node: storing aggregate: %w", err))
		return
	}
	if s.OnAggregate != nil {
		s.OnAggregate(f.Height, len(f.Updates), time.Since(start))
	}
	send(ctx, done, Aggregated{Height: f.Height, Base: f.Base, Updates: f.Updates, Result: res})
}
