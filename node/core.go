package node

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"github.com/ipfs/go-cid"

	"github.com/murmur-ml/murmur/consensus"
	"github.com/murmur-ml/murmur/storage"
)

// ErrConfig reports an unusable configuration.
var ErrConfig = errors.New("node: config")

// Config is a core's fixed setting.
type Config struct {
	Network string
	Self    string // this peer's ID (its consensus signer's ID)
	// Validator says whether this peer votes (it must then be in the
	// consensus validator set); Trainer whether it contributes updates.
	Validator, Trainer bool
	Rule               string // aggregation rule recorded in blocks
	CollectTicks       int    // ticks after a height starts before proposing
	// ActiveWindow, if > 0, lets the proposer propose before the window
	// closes once every trainer that contributed in the last ActiveWindow
	// heights has delivered for this one: a peer that stopped is waited for
	// only until it falls out of the window, a new one from its second
	// height on.
	ActiveWindow int
	// ExpectedUpdates, if > 0, also lets the proposer propose once this
	// many updates are in (a closed set of trainers, all delivered): with
	// it, which updates a block holds does not depend on timing.
	ExpectedUpdates int
	// Consensus is the consensus setting; a peer that does not vote still
	// needs its network and validator set to check commit certificates.
	Consensus consensus.Config
}

// Validate reports the first unusable field.
func (c Config) Validate() error {
	switch {
	case c.Self == "":
		return fmt.Errorf("%w: no peer ID", ErrConfig)
	case c.Rule == "":
		return fmt.Errorf("%w: no aggregation rule", ErrConfig)
	case c.CollectTicks < 0 || c.ActiveWindow < 0:
		return fmt.Errorf("%w: collection window %d, active window %d", ErrConfig, c.CollectTicks, c.ActiveWindow)
	}
	return c.Consensus.Validate()
}

// Events.
type (
	// Tick is one unit of time.
	Tick struct{}
	// Announced is a validated announcement from the updates topic; one
	// without an Update (cid.Undef) is an intent: Author is about to train
	// for Height.
	Announced struct {
		Author string
		Height uint64
		Update cid.Cid
	}
	// ConsensusMsg is a message from the consensus topic (already passed
	// consensus.CheckGossip).
	ConsensusMsg struct{ Msg consensus.Message }
	// Trained reports this peer's update for a height, stored.
	Trained struct {
		Height  uint64
		Update  cid.Cid
		Samples uint64
	}
	// Fetched reports an update (and its shards) present locally;
	// FetchFailed that getting it failed (it is asked for again).
	Fetched     struct{ Update cid.Cid }
	FetchFailed struct{ Update cid.Cid }
	// Committed is a certified commit heard outside the consensus round (the
	// heads topic, or a run of commits fetched to catch up).
	Committed struct{ Commit consensus.Commit }
	// Aggregated reports the result of aggregating Updates on Base.
	Aggregated struct {
		Height  uint64
		Base    cid.Cid
		Updates []cid.Cid // sorted
		Result  cid.Cid
	}
)

// Effects.
type (
	// Train: train from Base and store the update for Height.
	Train struct {
		Height uint64
		Base   cid.Cid
	}
	// Announce: publish this peer's update for Height.
	Announce struct {
		Height  uint64
		Update  cid.Cid
		Samples uint64
	}
	// Intend: tell the network this peer is about to train for Height (an
	// announcement without an update). A trainer that proposers do not yet
	// count as active sends it with its first Train, so the early proposal
	// waits for its update instead of closing just before it arrives.
	Intend struct{ Height uint64 }
	// Fetch: get an update and its shards from the network.
	Fetch struct{ Update cid.Cid }
	// Aggregate: compute the aggregate of Updates (sorted) on Base and
	// store the result checkpoint.
	Aggregate struct {
		Height  uint64
		Base    cid.Cid
		Updates []cid.Cid
	}
	// Persist: make these consensus records durable (fsync) before any
	// later effect.
	Persist struct{ Records []consensus.Record }
	// Send: deliver consensus messages (To "" = all validators).
	Send struct{ Envelopes []consensus.Envelope }
	// Commit: the block for Height is decided: store the block and its
	// certificate, pin Result, append the ledger.
	Commit struct {
		Height      uint64
		Block       *storage.Block
		BlockBytes  []byte
		Certificate consensus.Certificate
	}
	// Evidence: a validator equivocated.
	Evidence struct{ Evidence consensus.Evidence }
	// Sync: commits from Height on exist but are not here: fetch a run of
	// them from a peer and feed them back as Committed, in order.
	Sync struct{ Height uint64 }
	// Behind: a validator is still at Height, already decided here; send it
	// that height's commit from the ledger so it can catch up.
	Behind struct {
		Validator string
		Height    uint64
	}
)

type aggKey struct {
	base    string
	updates string // concatenated sorted CID bytes
}

func keyOf(base cid.Cid, updates []cid.Cid) aggKey {
	var b bytes.Buffer
	for _, u := range updates {
		b.Write(u.Bytes())
	}
	return aggKey{base.KeyString(), b.String()}
}

// Core is one peer's deterministic round pipeline.
type Core struct {
	cfg      Config
	m        *consensus.Machine
	height   uint64
	head     cid.Cid
	ticks    int // since the height started
	trained  bool
	trainDue bool
	updates  map[string]cid.Cid // announced for the current height, by author
	next     map[string]cid.Cid // announced for the next height, kept until it starts
	fetched  map[string]bool    // update CIDs present locally
	pending  map[string]bool    // fetches asked for
	results  map[aggKey]cid.Cid // aggregates computed here
	asked    map[aggKey]bool
	propose  *consensus.HeightRound // the machine asked for a value
	ver      consensus.Verifier
	ahead    map[uint64]consensus.Commit // verified commits for later heights (a peer that does not vote)
	synced   int                         // ticks since the last Sync
	active   map[string]uint64           // trainer → last finished height it announced an update for
	promised map[string]uint64           // trainer → height of an honoured intent it has not yet followed with an update
	intents  map[string]bool             // intents for the next height, honoured when it starts
	window   int                         // ticks the proposer may wait at this height (CollectTicks, stretched by late intents)
	out      []any
}

// maxAhead bounds the commits a non-voting peer holds for later heights;
// syncTicks is how long it waits for a Sync to answer before asking again;
// maxPromised bounds the intents waited for (each author gets one until it
// delivers, or promiseHeights pass: this bounds what fresh identities, or
// one that never delivers, can make proposers wait).
const (
	maxPromised    = 1024
	promiseHeights = 64
	maxAhead       = 64
	syncTicks      = 20
	refetchTicks   = 25
)

// New makes a core at height 1 on the genesis model.
func New(cfg Config, genesis cid.Cid, signer consensus.Signer, ver consensus.Verifier) (*Core, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Core{cfg: cfg, height: 1, head: genesis, fetched: map[string]bool{}, pending: map[string]bool{},
		results: map[aggKey]cid.Cid{}, asked: map[aggKey]bool{}, updates: map[string]cid.Cid{}, next: map[string]cid.Cid{},
		ver: ver, ahead: map[uint64]consensus.Commit{}, synced: syncTicks, active: map[string]uint64{},
		promised: map[string]uint64{}, intents: map[string]bool{}}
	if cfg.Validator {
		m, err := consensus.New(cfg.Consensus, signer, ver, c.validity)
		if err != nil {
			return nil, err
		}
		c.m = m
	}
	return c, nil
}

// Height is the height being decided; Head the committed model it starts
// from.
func (c *Core) Height() uint64 { return c.height }

// Head is the committed model.
func (c *Core) Head() cid.Cid { return c.head }

// ErrRestore reports a log and ledger that do not agree.
var ErrRestore = errors.New("node: restore")

// Restore puts a core that has not started where a previous run left off:
// committed heights decided with head as the last result, and the
// consensus machine rebuilt from its write-ahead log (which must end at the
// same height: the shell repairs the ledger from the log first).
func (c *Core) Restore(committed uint64, head cid.Cid, records []consensus.Record) error {
	c.height, c.head = committed+1, head
	if c.m == nil {
		return nil
	}
	if err := c.m.Restore(records); err != nil {
		return fmt.Errorf("%w: %w", ErrRestore, err)
	}
	if c.m.Height() != c.height {
		return fmt.Errorf("%w: the log is at height %d, the ledger at %d", ErrRestore, c.m.Height(), c.height)
	}
	return nil
}

// Round is the consensus round at the current height (0 for a peer that
// does not vote).
func (c *Core) Round() int32 {
	if c.m == nil {
		return 0
	}
	return max(c.m.Round(), 0)
}

// Start begins the current height (after any Restore).
func (c *Core) Start() []any {
	c.sync() // peers may be ahead of what this peer stored
	c.startHeight()
	if c.m != nil {
		c.m.Start()
		c.drain()
	}
	return c.flush()
}

func (c *Core) startHeight() {
	c.ticks, c.propose, c.window = 0, nil, c.cfg.CollectTicks
	c.updates, c.next = c.next, map[string]cid.Cid{}
	for _, u := range c.updates {
		c.want(u)
	}
	for a := range c.intents {
		c.honour(a)
	}
	clear(c.intents)
	// Train once the event is fully handled: a peer catching up commits
	// several heights in one step and should train only on the last head.
	c.trainDue = c.cfg.Trainer
}

func (c *Core) flush() []any {
	if c.trainDue {
		c.trainDue = false
		c.out = append(c.out, Train{Height: c.height, Base: c.head})
		if !c.isActive(c.cfg.Self) {
			c.out = append(c.out, Intend{Height: c.height})
		}
	}
	out := c.out
	c.out = nil
	return out
}

// Step takes one event and returns the effects to carry out, in order.
func (c *Core) Step(ev any) ([]any, error) {
	var err error
	switch e := ev.(type) {
	case Tick:
		c.ticks++
		c.synced++
		if c.ticks%refetchTicks == 0 {
			for _, u := range c.updates {
				c.want(u) // asks again for what failed to arrive
			}
		}
		if c.m != nil {
			c.m.Tick()
		}
	case Committed:
		err = c.committed(e.Commit)
	case Announced:
		if !e.Update.Defined() {
			c.intent(e.Author, e.Height)
			break
		}
		if h, ok := c.promised[e.Author]; ok && e.Height >= h {
			delete(c.promised, e.Author) // kept its promise: it may intend again
		}
		// The gossip validator already refused a second update by one
		// author for one height; the first one stands.
		// An update that arrives after its height was committed still shows
		// its author is active: the next proposer waits for it (a peer that
		// just caught up, or fetches the head late, is otherwise always a
		// step behind the early proposal and never gets in).
		if w := uint64(c.cfg.ActiveWindow); e.Height < c.height && e.Height+w >= c.height && e.Height > c.active[e.Author] {
			c.active[e.Author] = e.Height
		}
		switch e.Height {
		case c.height:
			if _, dup := c.updates[e.Author]; !dup {
				c.updates[e.Author] = e.Update
				c.want(e.Update)
			}
		case c.height + 1:
			if _, dup := c.next[e.Author]; !dup {
				c.next[e.Author] = e.Update
			}
		}
	case Trained:
		switch {
		case e.Height == c.height:
			c.fetched[e.Update.KeyString()] = true
			c.updates[c.cfg.Self] = e.Update
			c.out = append(c.out, Announce{Height: e.Height, Update: e.Update, Samples: e.Samples})
		case e.Height+1 == c.height:
			// Too late for its height, but announcing it tells the next
			// proposer this trainer is active, so it waits for the next
			// update: a trainer that must fetch each head before training
			// (a follower) would otherwise always miss the early proposal.
			c.out = append(c.out, Announce{Height: e.Height, Update: e.Update, Samples: e.Samples})
		}
	case Fetched:
		c.fetched[e.Update.KeyString()] = true
		delete(c.pending, e.Update.KeyString())
	case FetchFailed:
		delete(c.pending, e.Update.KeyString())
	case Aggregated:
		c.results[keyOf(e.Base, e.Updates)] = e.Result
	case ConsensusMsg:
		if c.m != nil {
			err = c.m.Step(e.Msg)
		}
	default:
		return nil, fmt.Errorf("node: unknown event %T", ev)
	}
	if c.m != nil {
		c.maybePropose()
		c.m.Recheck()
		c.drain()
	}
	return c.flush(), err
}

func (c *Core) want(u cid.Cid) {
	k := u.KeyString()
	if !c.fetched[k] && !c.pending[k] {
		c.pending[k] = true
		c.out = append(c.out, Fetch{Update: u})
	}
}

// collected is the sorted set of updates for the height that are present.
func (c *Core) collected() []cid.Cid {
	var out []cid.Cid
	for _, u := range c.updates {
		if c.fetched[u.KeyString()] {
			out = append(out, u)
		}
	}
	slices.SortFunc(out, func(a, b cid.Cid) int { return bytes.Compare(a.Bytes(), b.Bytes()) })
	return slices.CompactFunc(out, func(a, b cid.Cid) bool { return a.Equals(b) })
}

// committed takes a certified commit from outside the round. A validator's
// machine checks and orders it (it holds commits for later heights); a peer
// that does not vote checks the certificate here, holds it until the
// heights before it are decided, and asks for the missing ones.
func (c *Core) committed(cm consensus.Commit) error {
	h := cm.Certificate.Height
	if c.m != nil {
		if h > c.height {
			c.sync()
		}
		return c.m.Step(&cm)
	}
	if h < c.height || h > c.height+maxAhead || len(c.ahead) >= maxAhead {
		return nil
	}
	if err := cm.Certificate.Verify(c.cfg.Network, c.cfg.Consensus.Validators, c.ver); err != nil {
		return err
	}
	if consensus.HashOf(cm.Value) != cm.Certificate.Value {
		return fmt.Errorf("%w: commit value does not match its certificate", consensus.ErrInvalid)
	}
	c.ahead[h] = cm
	for {
		next, ok := c.ahead[c.height]
		if !ok {
			break
		}
		delete(c.ahead, c.height)
		c.commit(next)
	}
	if len(c.ahead) > 0 {
		c.sync()
	}
	return nil
}

// sync asks for the commits from the current height on, at most once per
// syncTicks.
func (c *Core) sync() {
	if c.synced >= syncTicks {
		c.synced = 0
		c.out = append(c.out, Sync{Height: c.height})
	}
}

// maybePropose answers the machine's request for a value once the window
// has closed (or every expected update is in) and the aggregate of the
// collected updates is known.
func (c *Core) maybePropose() {
	if c.propose == nil {
		return
	}
	ups := c.collected()
	if len(ups) == 0 {
		return // nothing to aggregate yet: wait (the round may time out)
	}
	all := c.cfg.ExpectedUpdates > 0 && len(ups) >= c.cfg.ExpectedUpdates
	if c.ticks < c.window && !all && !c.allActiveIn() {
		return
	}
	k := keyOf(c.head, ups)
	res, ok := c.results[k]
	if !ok {
		c.aggregate(ups)
		return
	}
	blk := &storage.Block{Kind: storage.KindBlock, Version: storage.FormatVersion, Network: c.cfg.Network,
		Height: c.height, Base: storage.Link{Cid: c.head}, Result: storage.Link{Cid: res},
		Updates: storage.SortLinks(ups), Rule: c.cfg.Rule, Proposer: c.cfg.Self}
	b, _, err := storage.Encode(blk)
	if err != nil {
		panic("node: a block of valid CIDs does not encode: " + err.Error())
	}
	hr := *c.propose
	c.propose = nil
	c.m.Propose(hr, b)
}

// isActive reports whether a trainer counts as active at this height:
// proposers wait for its update.
func (c *Core) isActive(a string) bool {
	h, ok := c.active[a]
	return c.cfg.ActiveWindow > 0 && ok && h+uint64(c.cfg.ActiveWindow) >= c.height
}

// intent takes an author's intent to train for height h: for the current
// height it counts the author active at once; for the next, when that
// starts. An author that sent an intent and has not announced an update
// since is not believed again (an intent costs nothing to send, and each
// one honoured can make proposers wait out the collection window).
func (c *Core) intent(a string, h uint64) {
	if c.cfg.ActiveWindow == 0 {
		return
	}
	switch h {
	case c.height:
		if c.honour(a) {
			// An intent sent late in the height (a peer that has just
			// caught up) would otherwise get only the rest of the window
			// to fetch the head, train and deliver. Each one honoured
			// stretches the window to a full one from now, up to
			// stretchLimit: an author is believed once until it
			// delivers, so what intents can delay is bounded.
			c.window = max(c.window, min(c.ticks+c.cfg.CollectTicks, c.stretchLimit()))
		}
	case c.height + 1:
		if len(c.intents) < maxPromised {
			c.intents[a] = true
		}
	}
}

// stretchLimit is as long as intents may stretch the collection window:
// twice the window, and a quarter of the propose timeout short of it, so
// that the block is aggregated and out before the other validators give
// up on the proposer (they count that timeout from the same start).
func (c *Core) stretchLimit() int {
	return max(c.cfg.CollectTicks, min(2*c.cfg.CollectTicks, c.cfg.Consensus.TimeoutPropose*3/4))
}

// honour counts an author's intent for this height, if it is believed,
// and reports whether it was.
func (c *Core) honour(a string) bool {
	for b, h := range c.promised {
		if h+promiseHeights < c.height {
			delete(c.promised, b) // a broken promise is forgiven after a while
		}
	}
	if _, broken := c.promised[a]; broken || c.isActive(a) || len(c.promised) >= maxPromised || !c.anyDelivered() {
		return false
	}
	c.promised[a] = c.height
	// Active as if its last update were for the height before this one:
	// waited for here and, should this one come late, for the window after.
	c.active[a] = max(c.active[a], c.height-1)
	return true
}

// anyDelivered reports whether a trainer is active by an update it
// delivered (not only by an intent). Intents count only then: at the first
// height, or after a quiet spell, the window is waited out as before,
// rather than closed early once the trainers whose intents happened to
// arrive have delivered.
func (c *Core) anyDelivered() bool {
	for b := range c.active {
		if _, p := c.promised[b]; !p && c.isActive(b) {
			return true
		}
	}
	return false
}

// allActiveIn reports whether every recently active trainer's update for
// this height is here (and at least one trainer was active before it: at
// the first height, or after a quiet spell, the window is waited out).
func (c *Core) allActiveIn() bool {
	w := uint64(c.cfg.ActiveWindow)
	if w == 0 {
		return false
	}
	for a, h := range c.active {
		if h+w < c.height {
			delete(c.active, a) // fell out of the window
		}
	}
	for a := range c.active {
		u, ok := c.updates[a]
		if !ok || !c.fetched[u.KeyString()] {
			return false
		}
	}
	return len(c.active) > 0
}

func (c *Core) aggregate(ups []cid.Cid) {
	k := keyOf(c.head, ups)
	if !c.asked[k] {
		c.asked[k] = true
		c.out = append(c.out, Aggregate{Height: c.height, Base: c.head, Updates: slices.Clone(ups)})
	}
}

// validity is the consensus machine's judgement of a block: re-execution.
func (c *Core) validity(h uint64, value []byte) consensus.Verdict {
	obj, err := storage.Decode(value)
	blk, ok := obj.(*storage.Block)
	if err != nil || !ok || blk.Height != h || blk.Network != c.cfg.Network || blk.Rule != c.cfg.Rule ||
		!blk.Base.Equals(c.head) || len(blk.Updates) == 0 {
		return consensus.Reject
	}
	ups := make([]cid.Cid, len(blk.Updates))
	missing := false
	for i, l := range blk.Updates {
		ups[i] = l.Cid
		if !c.fetched[l.KeyString()] {
			missing = true
			c.want(l.Cid)
		}
	}
	if missing {
		return consensus.NotYet
	}
	res, ok := c.results[keyOf(c.head, ups)]
	if !ok {
		c.aggregate(ups)
		return consensus.NotYet
	}
	if !res.Equals(blk.Result.Cid) {
		return consensus.Reject // the proposer's result is not what the rule gives
	}
	return consensus.Accept
}

// drain turns the machine's Ready into effects, persist first.
func (c *Core) drain() {
	for {
		rd := c.m.Ready()
		if rd.IsEmpty() {
			return
		}
		if len(rd.Persist) > 0 {
			c.out = append(c.out, Persist{Records: rd.Persist})
		}
		if len(rd.Send) > 0 {
			c.out = append(c.out, Send{Envelopes: rd.Send})
		}
		for _, ev := range rd.Evidence {
			c.out = append(c.out, Evidence{Evidence: ev})
		}
		for _, lag := range rd.Behind {
			c.out = append(c.out, Behind{Validator: lag.Validator, Height: lag.Height})
		}
		// Decisions first: committing starts the next height, and a request
		// for a value in the same Ready is for that next height.
		for _, d := range rd.Decided {
			c.commit(d)
		}
		if rd.NeedValue != nil {
			hr := *rd.NeedValue
			c.propose = &hr
			c.maybePropose()
		}
	}
}

func (c *Core) commit(d consensus.Commit) {
	obj, err := storage.Decode(d.Value)
	blk, ok := obj.(*storage.Block)
	if err != nil || !ok || blk.Height != d.Certificate.Height || !blk.Base.Equals(c.head) {
		// Honest validators accept only blocks that decode and build on the
		// head; a certificate on anything else means more than a third of
		// the voting power is Byzantine, which the protocol cannot survive.
		panic(fmt.Sprintf("node: certified value at %d is not a block on head %s: %v", d.Certificate.Height, c.head, err))
	}
	c.out = append(c.out, Commit{Height: blk.Height, Block: blk, BlockBytes: d.Value, Certificate: d.Certificate})
	if blk.Height == c.height {
		for a := range c.updates {
			c.active[a] = c.height
		}
	}
	c.head = blk.Result.Cid
	c.height = blk.Height + 1
	for k := range c.results {
		if k.base != c.head.KeyString() {
			delete(c.results, k)
		}
	}
	clear(c.asked)
	c.startHeight()
}

// IsValidator reports whether this peer votes.
func (c *Core) IsValidator() bool { return c.cfg.Validator }

// IsTrainer reports whether this peer contributes updates.
func (c *Core) IsTrainer() bool { return c.cfg.Trainer }
