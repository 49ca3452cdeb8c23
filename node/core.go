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
	Consensus          consensus.Config
}

// Validate reports the first unusable field.
func (c Config) Validate() error {
	switch {
	case c.Self == "":
		return fmt.Errorf("%w: no peer ID", ErrConfig)
	case !c.Validator && !c.Trainer:
		return fmt.Errorf("%w: %s is neither validator nor trainer", ErrConfig, c.Self)
	case c.Rule == "":
		return fmt.Errorf("%w: no aggregation rule", ErrConfig)
	case c.CollectTicks < 0:
		return fmt.Errorf("%w: collection window %d", ErrConfig, c.CollectTicks)
	}
	if c.Validator {
		return c.Consensus.Validate()
	}
	return nil
}

// Events.
type (
	// Tick is one unit of time.
	Tick struct{}
	// Announced is a validated announcement from the updates topic.
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
	// Fetched reports an update (and its shards) present locally.
	Fetched struct{ Update cid.Cid }
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
	cfg     Config
	m       *consensus.Machine
	height  uint64
	head    cid.Cid
	ticks   int // since the height started
	trained bool
	updates map[string]cid.Cid // announced for the current height, by author
	next    map[string]cid.Cid // announced for the next height, kept until it starts
	fetched map[string]bool    // update CIDs present locally
	pending map[string]bool    // fetches asked for
	results map[aggKey]cid.Cid // aggregates computed here
	asked   map[aggKey]bool
	propose *consensus.HeightRound // the machine asked for a value
	out     []any
}

// New makes a core at height 1 on the genesis model.
func New(cfg Config, genesis cid.Cid, signer consensus.Signer, ver consensus.Verifier) (*Core, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Core{cfg: cfg, height: 1, head: genesis, fetched: map[string]bool{}, pending: map[string]bool{},
		results: map[aggKey]cid.Cid{}, asked: map[aggKey]bool{}, updates: map[string]cid.Cid{}, next: map[string]cid.Cid{}}
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

// Start begins height 1 (after any consensus restore).
func (c *Core) Start() []any {
	c.startHeight()
	if c.m != nil {
		c.m.Start()
		c.drain()
	}
	return c.flush()
}

func (c *Core) startHeight() {
	c.ticks, c.trained, c.propose = 0, false, nil
	c.updates, c.next = c.next, map[string]cid.Cid{}
	for _, u := range c.updates {
		c.want(u)
	}
	if c.cfg.Trainer {
		c.trained = true
		c.out = append(c.out, Train{Height: c.height, Base: c.head})
	}
}

func (c *Core) flush() []any {
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
		if c.m != nil {
			c.m.Tick()
		}
	case Announced:
		// The gossip validator already refused a second update by one
		// author for one height; the first one stands.
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
		if e.Height == c.height {
			c.fetched[e.Update.KeyString()] = true
			c.updates[c.cfg.Self] = e.Update
			c.out = append(c.out, Announce{Height: e.Height, Update: e.Update, Samples: e.Samples})
		}
	case Fetched:
		c.fetched[e.Update.KeyString()] = true
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

// maybePropose answers the machine's request for a value once the window
// has closed and the aggregate of the collected updates is known.
func (c *Core) maybePropose() {
	if c.propose == nil || c.ticks < c.cfg.CollectTicks {
		return
	}
	ups := c.collected()
	if len(ups) == 0 {
		return // nothing to aggregate yet: wait (the round may time out)
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
		if rd.NeedValue != nil {
			hr := *rd.NeedValue
			c.propose = &hr
			c.maybePropose()
		}
		for _, d := range rd.Decided {
			c.commit(d)
		}
	}
}

func (c *Core) commit(d consensus.Commit) {
	obj, err := storage.Decode(d.Value)
	blk, ok := obj.(*storage.Block)
	if err != nil || !ok {
		panic("node: a decided value is not a block (validity accepted it): " + fmt.Sprint(err))
	}
	c.out = append(c.out, Commit{Height: blk.Height, Block: blk, BlockBytes: d.Value, Certificate: d.Certificate})
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
