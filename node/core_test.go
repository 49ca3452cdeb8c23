package node

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/murmur-ml/murmur/consensus"
	"github.com/murmur-ml/murmur/storage"
)

type edSigner struct {
	id   string
	priv ed25519.PrivateKey
}

func (s edSigner) ID() string                      { return s.id }
func (s edSigner) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(s.priv, msg), nil }

type edVerifier map[string]ed25519.PublicKey

func (v edVerifier) Verify(id string, msg, sig []byte) bool {
	p, ok := v[id]
	return ok && ed25519.Verify(p, msg, sig)
}

func fakeCID(parts ...any) cid.Cid {
	h, _ := mh.Sum([]byte(fmt.Sprint(parts...)), mh.SHA2_256, -1)
	return cid.NewCidV1(cid.DagCBOR, h)
}

// world runs cores synchronously: a seeded queue of events, effects carried
// out by fakes (training and aggregation are pure functions of their
// inputs, as the real ones are of theirs), no goroutines, no clock.
type world struct {
	t       *testing.T
	rng     *rand.Rand
	cores   []*Core
	ids     []string
	queue   [][]any // per core
	commits [][]Commit
	liar    int // this core's aggregates are wrong (-1: none)
	// slow, if set, holds each core's Trained events for this many ticks
	// (training takes time); quiet drops core late's below height joins.
	slow  map[int]int
	late  int
	joins uint64
	held  []heldEvent
	// noIntents drops Intend effects (the behaviour before intents).
	noIntents bool
	// onTick, if set, runs after every tick (to inject events).
	onTick func()
}

type heldEvent struct {
	core, due int
	ev        any
}

func newWorld(t *testing.T, n int, seed uint64, liar int) *world {
	w := &world{t: t, rng: rand.New(rand.NewPCG(seed, 1)), queue: make([][]any, n), commits: make([][]Commit, n), liar: liar}
	vals := make([]consensus.Validator, n)
	ver := edVerifier{}
	signers := make([]edSigner, n)
	for i := range n {
		id := fmt.Sprintf("p%02d", i)
		s := sha256.Sum256([]byte(id))
		priv := ed25519.NewKeyFromSeed(s[:])
		signers[i] = edSigner{id, priv}
		ver[id] = priv.Public().(ed25519.PublicKey)
		vals[i] = consensus.Validator{ID: id, Power: 1}
		w.ids = append(w.ids, id)
	}
	vs, err := consensus.NewValidatorSet(vals)
	if err != nil {
		t.Fatal(err)
	}
	cc := consensus.DefaultConfig("test", vs)
	cc.TimeoutPropose, cc.TimeoutPrevote, cc.TimeoutPrecommit, cc.TimeoutDelta, cc.RebroadcastTicks = 10, 4, 4, 2, 8
	genesis := fakeCID("genesis")
	for i := range n {
		c, err := New(Config{Network: "test", Self: w.ids[i], Validator: true, Trainer: true, Rule: "mean",
			CollectTicks: 3, Consensus: cc}, genesis, signers[i], ver)
		if err != nil {
			t.Fatal(err)
		}
		w.cores = append(w.cores, c)
	}
	for i, c := range w.cores {
		w.apply(i, c.Start())
	}
	return w
}

func (w *world) index(id string) int {
	for i, x := range w.ids {
		if x == id {
			return i
		}
	}
	return -1
}

// apply carries out one core's effects.
func (w *world) apply(i int, effects []any) {
	for _, e := range effects {
		switch f := e.(type) {
		case Train:
			tr := Trained{Height: f.Height, Update: fakeCID("update", w.ids[i], f.Height, f.Base)}
			if d := w.slow[i]; d > 0 {
				if i == w.late && f.Height < w.joins {
					continue
				}
				w.held = append(w.held, heldEvent{core: i, due: d, ev: tr})
				continue
			}
			w.queue[i] = append(w.queue[i], tr)
		case Announce:
			for j := range w.cores {
				if j != i {
					w.queue[j] = append(w.queue[j], Announced{Author: w.ids[i], Height: f.Height, Update: f.Update})
				}
			}
		case Intend:
			if w.noIntents {
				continue
			}
			for j := range w.cores {
				if j != i {
					w.queue[j] = append(w.queue[j], Announced{Author: w.ids[i], Height: f.Height})
				}
			}
		case Fetch:
			w.queue[i] = append(w.queue[i], Fetched{Update: f.Update})
		case Aggregate:
			res := fakeCID("aggregate", f.Base, f.Updates)
			if i == w.liar {
				res = fakeCID("a better model, trust me", f.Height)
			}
			w.queue[i] = append(w.queue[i], Aggregated{Height: f.Height, Base: f.Base, Updates: f.Updates, Result: res})
		case Send:
			for _, env := range f.Envelopes {
				for j := range w.cores {
					if j != i && (env.To == "" || env.To == w.ids[j]) {
						w.queue[j] = append(w.queue[j], ConsensusMsg{Msg: env.Msg})
					}
				}
			}
		case Commit:
			w.commits[i] = append(w.commits[i], f)
		}
	}
}

func (w *world) run(heights, maxTicks int) {
	done := func() bool {
		for i := range w.cores {
			if i != w.liar && len(w.commits[i]) < heights {
				return false
			}
		}
		return true
	}
	for tick := 0; tick < maxTicks; tick++ {
		if done() {
			return
		}
		// Deliver everything queued, in a seeded order across cores (heights
		// can follow one another without a tick: stop once enough are done).
		for progress := true; progress && !done(); {
			progress = false
			for _, i := range w.rng.Perm(len(w.cores)) {
				if len(w.queue[i]) == 0 {
					continue
				}
				ev := w.queue[i][0]
				w.queue[i] = w.queue[i][1:]
				out, _ := w.cores[i].Step(ev)
				w.apply(i, out)
				progress = true
			}
		}
		for i, c := range w.cores {
			out, _ := c.Step(Tick{})
			w.apply(i, out)
		}
		var still []heldEvent
		for _, h := range w.held {
			if h.due--; h.due <= 0 {
				w.queue[h.core] = append(w.queue[h.core], h.ev)
			} else {
				still = append(still, h)
			}
		}
		w.held = still
		if w.onTick != nil {
			w.onTick()
		}
	}
}

func TestRoundsCommitIdenticalHeads(t *testing.T) {
	w := newWorld(t, 4, 1, -1)
	w.run(5, 2000)
	checkChain(t, w, 5)
}

// TestLyingProposerIsOutvoted: a validator whose "aggregate" is not what
// the rule gives proposes it; the others re-execute, refuse it, and commit
// a correct block in a later round.
func TestLyingProposerIsOutvoted(t *testing.T) {
	w := newWorld(t, 4, 2, 1)
	w.run(6, 4000)
	checkChain(t, w, 6)
	lied := false
	for _, c := range w.commits[0] {
		lied = lied || c.Certificate.Round > 0
	}
	if !lied {
		t.Fatal("the liar never got to propose: the test shows nothing")
	}
}

// checkChain: every honest core committed the same blocks, each block's
// result is the aggregate of its listed updates on its base (what the fake
// rule gives), and each block builds on the previous result.
func checkChain(t *testing.T, w *world, heights int) {
	t.Helper()
	var ref []Commit
	for i := range w.cores {
		if i == w.liar {
			continue
		}
		if len(w.commits[i]) < heights {
			t.Fatalf("%s committed %d heights", w.ids[i], len(w.commits[i]))
		}
		if ref == nil {
			ref = w.commits[i]
			continue
		}
		for h := range heights {
			if string(w.commits[i][h].BlockBytes) != string(ref[h].BlockBytes) {
				t.Fatalf("height %d: %s committed a different block", h+1, w.ids[i])
			}
		}
	}
	base := fakeCID("genesis")
	for h, c := range ref[:heights] {
		b := c.Block
		ups := make([]cid.Cid, len(b.Updates))
		for i, l := range b.Updates {
			ups[i] = l.Cid
		}
		if !b.Base.Equals(base) || !b.Result.Equals(fakeCID("aggregate", base, ups)) || len(ups) < 3 {
			t.Fatalf("height %d: block base %s result %s with %d updates is not the rule's result on the head", h+1, b.Base, b.Result, len(ups))
		}
		base = b.Result.Cid
	}
}

// A peer that does not vote follows the chain from certified commits: in
// any order, asking to sync when it sees a gap, refusing a commit whose
// certificate does not verify, and training on each new head.
func TestFollowerAppliesCertifiedCommits(t *testing.T) {
	w := newWorld(t, 4, 3, -1)
	w.run(5, 2000)
	cc := w.cores[0].cfg.Consensus
	ver := w.cores[0].ver
	f, err := New(Config{Network: "test", Self: "follower", Trainer: true, Rule: "mean", Consensus: cc}, fakeCID("genesis"), nil, ver)
	if err != nil {
		t.Fatal(err)
	}
	hasSync := func(effs []any) bool {
		for _, e := range effs {
			if _, ok := e.(Sync); ok {
				return true
			}
		}
		return false
	}
	if !hasSync(f.Start()) {
		t.Fatal("a starting follower does not ask for commits")
	}
	commit := func(h int) consensus.Commit {
		c := w.commits[0][h-1]
		return consensus.Commit{Value: c.BlockBytes, Certificate: c.Certificate}
	}
	// A forged certificate: one precommit's signature broken.
	forged := commit(1)
	forged.Certificate.Precommits = append([]consensus.Vote(nil), forged.Certificate.Precommits...)
	forged.Certificate.Precommits[0].Signature = append([]byte{1}, forged.Certificate.Precommits[0].Signature[1:]...)
	if _, err := f.Step(Committed{Commit: forged}); err == nil || f.Height() != 1 {
		t.Fatalf("forged certificate: err %v, height %d", err, f.Height())
	}
	// Heights 3 and 2 arrive before 1: held, then applied in order.
	for range syncTicks {
		_, _ = f.Step(Tick{})
	}
	out, err := f.Step(Committed{Commit: commit(3)})
	if err != nil || !hasSync(out) || f.Height() != 1 {
		t.Fatalf("a commit ahead: err %v, sync %v, height %d", err, hasSync(out), f.Height())
	}
	if _, err := f.Step(Committed{Commit: commit(2)}); err != nil {
		t.Fatal(err)
	}
	out, err = f.Step(Committed{Commit: commit(1)})
	if err != nil || f.Height() != 4 || !f.Head().Equals(w.commits[0][2].Block.Result.Cid) {
		t.Fatalf("after 1..3: err %v, height %d, head %s", err, f.Height(), f.Head())
	}
	var commits, trains int
	for _, e := range out {
		switch e := e.(type) {
		case Commit:
			commits++
		case Train:
			trains++
			if e.Height != 4 || !e.Base.Equals(f.Head()) {
				t.Fatalf("trains %d on %s", e.Height, e.Base)
			}
		}
	}
	if commits != 3 || trains != 1 {
		t.Fatalf("%d commits and %d train effects, want 3 and 1", commits, trains)
	}
}

// With ActiveWindow the proposer does not wait out the window once every
// trainer active at the last heights has delivered.
func TestActiveWindowShortensRounds(t *testing.T) {
	ticksFor := func(window int) int {
		w := newWorld(t, 4, 4, -1)
		for _, c := range w.cores {
			c.cfg.CollectTicks, c.cfg.ActiveWindow = 40, window
			c.cfg.Consensus.TimeoutPropose = 200
		}
		ticks := 0
		for len(w.commits[0]) < 4 && ticks < 5000 {
			w.run(len(w.commits[0])+1, 1)
			ticks++
		}
		checkChain(t, w, 4)
		return ticks
	}
	slow, fast := ticksFor(0), ticksFor(2)
	t.Logf("4 heights: %d ticks waiting out the window, %d with the active window", slow, fast)
	if !(fast < slow) {
		t.Fatalf("active window: %d ticks, full window: %d", fast, slow)
	}
}

// TestReturningTrainerContributesAtOnce: a trainer that was away (out of
// the active window) and is slower than the others sends an intent with
// its first training; proposers wait for it, so its update is in the very
// next block. Without the intent that block closes just before its update
// arrives.
func TestReturningTrainerContributesAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name      string
		noIntents bool
		want      bool
	}{{"with intents", false, true}, {"without intents", true, false}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, 4, 7, -1)
			w.slow, w.late, w.joins, w.noIntents = map[int]int{0: 3, 1: 3, 2: 3, 3: 4}, 3, 5, tc.noIntents
			for _, c := range w.cores {
				c.cfg.CollectTicks, c.cfg.ActiveWindow = 40, 2
				c.cfg.Consensus.TimeoutPropose = 200
			}
			w.run(6, 5000)
			checkChain(t, w, 6)
			blk := w.commits[0][4].Block
			if blk.Height != 5 {
				t.Fatalf("fifth commit is height %d", blk.Height)
			}
			in := false
			for _, u := range blk.Updates {
				in = in || u.Equals(fakeCID("update", w.ids[3], uint64(5), blk.Base.Cid))
			}
			t.Logf("block 5 holds %d updates, the returning trainer's: %v", len(blk.Updates), in)
			if in != tc.want {
				t.Fatalf("returning trainer's update in block 5: %v, want %v", in, tc.want)
			}
		})
	}
}

// An intent counts its author active for the height it names (at once, or
// when the next height starts); an author that sent one and has not
// announced an update since is not believed again; stale intents, intents
// with no active window and intents while no trainer is active by a
// delivered update (the first height, a quiet spell) change nothing.
func TestIntents(t *testing.T) {
	type step struct {
		height uint64 // the core's height before the event
		ev     Announced
		active bool // whether "x" is active after it
	}
	intent := func(h uint64) Announced { return Announced{Author: "x", Height: h} }
	update := func(h uint64) Announced { return Announced{Author: "x", Height: h, Update: fakeCID("x", h)} }
	tests := []struct {
		name   string
		window int
		steps  []step
		quiet  bool // no other trainer delivered lately
	}{
		{"current height", 2, []step{{3, intent(3), true}}, false},
		{"nobody delivered", 2, []step{{3, intent(3), false}}, true},
		{"stale", 2, []step{{3, intent(2), false}}, false},
		{"no active window", 0, []step{{3, intent(3), false}}, false},
		{"next height waits for it", 2, []step{{3, intent(4), false}}, false},
		{"broken promise", 2, []step{{3, intent(3), true}, {6, intent(6), false}}, false},
		{"kept promise", 2, []step{{3, intent(3), true}, {3, update(3), true}, {6, intent(6), true}}, false},
		{"broken promise forgiven", 2, []step{{3, intent(3), true}, {3 + promiseHeights + 1, intent(3 + promiseHeights + 1), true}}, false},
		{"late update keeps it", 2, []step{{3, intent(3), true}, {4, update(3), true}, {7, intent(7), true}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, 4, 1, -1)
			c := w.cores[0]
			c.cfg.ActiveWindow = tc.window
			for i, s := range tc.steps {
				c.height = s.height
				if !tc.quiet {
					c.active["y"] = s.height - 1 // delivered at the last height
				}
				if _, err := c.Step(s.ev); err != nil {
					t.Fatal(err)
				}
				if got := c.isActive("x"); got != s.active {
					t.Fatalf("step %d (%+v at height %d): active %v, want %v", i, s.ev, s.height, got, s.active)
				}
			}
		})
	}
	// An intent for the next height counts once that height starts.
	w := newWorld(t, 4, 1, -1)
	c := w.cores[0]
	c.cfg.ActiveWindow = 2
	if _, err := c.Step(Announced{Author: "x", Height: c.height + 1}); err != nil {
		t.Fatal(err)
	}
	c.active["y"] = c.height
	c.height++
	c.startHeight()
	if !c.isActive("x") {
		t.Fatal("an intent for the next height did not count when it started")
	}
}

// TestLateTrainerGetsIn: a trainer whose update always lands just after the
// early proposal (it fetches each head before training) still announces
// it; that marks it active, so the next proposer waits for it and its
// updates reach blocks. Dropping the stale update kept it out for good.
func TestLateTrainerGetsIn(t *testing.T) {
	w := newWorld(t, 4, 7, -1)
	// Training takes 3 ticks, core 3 (which fetches each head first) 4.
	// Its first update (trained at Start) gets in; it then goes quiet until
	// height 5 (out of the active window) and is slow from there on.
	w.slow, w.late, w.joins = map[int]int{0: 3, 1: 3, 2: 3, 3: 4}, 3, 5
	for _, c := range w.cores {
		c.cfg.CollectTicks, c.cfg.ActiveWindow = 40, 2
		c.cfg.Consensus.TimeoutPropose = 200
	}
	w.run(12, 5000)
	checkChain(t, w, 12)
	var full []uint64
	for _, c := range w.commits[0] {
		if len(c.Block.Updates) == 4 && c.Height >= 5 {
			full = append(full, c.Height)
		}
	}
	t.Logf("heights with the slow trainer's update: %v", full)
	// Its intent gets its first one in too (without intents: 7 of 8, the
	// first missed).
	if len(full) != 8 {
		t.Fatalf("the slow trainer's update reached %d of the 8 blocks after it came back (%v), want all", len(full), full)
	}
}

// TestLateIntentStretchesWindow: an intent honoured late in a height (a
// peer that has just caught up) gives its author a full collection window
// from then on, up to twice the window and a quarter of the propose
// timeout short of it; an intent not believed stretches nothing.
func TestLateIntentStretchesWindow(t *testing.T) {
	tests := []struct {
		name           string
		collect, tprop int
		ticks          int  // ticks into the height when the intent arrives
		broken         bool // the author broke an earlier promise
		want           int
	}{
		{"early intent: the window as it was", 10, 30, 0, false, 10},
		{"late intent: a full window from now", 10, 30, 7, false, 17},
		{"very late: twice the window at most", 10, 30, 15, false, 20},
		{"short propose timeout caps it", 10, 16, 7, false, 12},
		{"not believed: no stretch", 10, 30, 7, true, 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, 4, 1, -1)
			c := w.cores[0]
			c.cfg.ActiveWindow, c.cfg.CollectTicks, c.cfg.Consensus.TimeoutPropose = 2, tc.collect, tc.tprop
			c.height = 3
			c.startHeight()
			c.active["y"] = 2 // another trainer delivered at the last height
			if tc.broken {
				c.promised["x"] = 2
			}
			c.ticks = tc.ticks
			if _, err := c.Step(Announced{Author: "x", Height: 3}); err != nil {
				t.Fatal(err)
			}
			if c.window != tc.want {
				t.Fatalf("window %d ticks, want %d", c.window, tc.want)
			}
		})
	}
	// In a running network: the validators' trainings take 5 ticks of a
	// 6-tick window; trainer x (not a validator) catches up 3 ticks into
	// height 3, says it will train, and delivers 5 ticks later. Its update
	// is in block 3 only with the stretch.
	for _, stretch := range []bool{true, false} {
		w := newWorld(t, 4, 3, -1)
		for _, c := range w.cores {
			c.cfg.CollectTicks, c.cfg.ActiveWindow = 6, 2
			c.cfg.Consensus.TimeoutPropose = 40
		}
		w.slow = map[int]int{0: 5, 1: 5, 2: 5, 3: 5}
		w.run(2, 2000)
		update := fakeCID("x", 3)
		k := 0
		w.onTick = func() {
			k++
			switch k {
			case 3:
				for i, c := range w.cores {
					if !stretch {
						// The core before the stretch: a window of 6
						// ticks whatever arrives (CollectTicks 0 would
						// give the next heights no window; block 3 is
						// all this looks at).
						c.cfg.CollectTicks = 0
					}
					w.queue[i] = append(w.queue[i], Announced{Author: "x", Height: 3})
				}
			case 8:
				for i := range w.cores {
					w.queue[i] = append(w.queue[i], Announced{Author: "x", Height: 3, Update: update})
				}
			}
		}
		w.run(3, 2000)
		checkChain(t, w, 3)
		in := slices.ContainsFunc(w.commits[0][2].Block.Updates, func(l storage.Link) bool { return l.Cid.Equals(update) })
		if in != stretch {
			t.Fatalf("stretch %v: x's update in block 3 = %v (block %+v)", stretch, in, w.commits[0][2].Block.Updates)
		}
	}
}
