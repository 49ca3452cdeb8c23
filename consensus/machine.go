package consensus

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
)

// Verdict is the application's judgement of a proposed value.
type Verdict int

const (
	Accept Verdict = iota
	Reject         // prevote nil
	NotYet         // the data needed to judge is still being fetched: wait
)

// Validity judges a value proposed for a height (it must be deterministic:
// every honest validator must reach the same verdict eventually).
type Validity func(height uint64, value []byte) Verdict

// Config is a machine's fixed setting.
type Config struct {
	Network    string
	Validators *ValidatorSet
	// Timeouts in ticks at round 0; each grows by TimeoutDelta per round.
	TimeoutPropose, TimeoutPrevote, TimeoutPrecommit, TimeoutDelta int
	// MaxValueBytes bounds a proposed value (default 1 MiB).
	MaxValueBytes int
	// RebroadcastTicks is how often the machine sends again what it signed
	// at the current height (and relays the current proposal): gossip
	// delivers each message at most once, and a validator that was cut off
	// needs them again to make progress. 0 disables it.
	RebroadcastTicks int
}

// DefaultConfig has timeouts for a shell ticking every 100 ms.
func DefaultConfig(network string, vals *ValidatorSet) Config {
	return Config{Network: network, Validators: vals, TimeoutPropose: 30, TimeoutPrevote: 10,
		TimeoutPrecommit: 10, TimeoutDelta: 5, MaxValueBytes: 1 << 20, RebroadcastTicks: 20}
}

// Validate reports the first unusable field.
func (c Config) Validate() error {
	switch {
	case c.Validators == nil:
		return fmt.Errorf("%w: no validator set", ErrConfig)
	case c.Network == "" || len(c.Network) > 255:
		return fmt.Errorf("%w: network name %q", ErrConfig, c.Network)
	case c.TimeoutPropose < 1 || c.TimeoutPrevote < 1 || c.TimeoutPrecommit < 1 || c.TimeoutDelta < 0:
		return fmt.Errorf("%w: timeouts must be ≥ 1 tick (delta ≥ 0)", ErrConfig)
	case c.RebroadcastTicks < 0:
		return fmt.Errorf("%w: rebroadcast every %d ticks", ErrConfig, c.RebroadcastTicks)
	case c.MaxValueBytes < 1:
		return fmt.Errorf("%w: max value bytes %d", ErrConfig, c.MaxValueBytes)
	}
	return nil
}

// Record is what the shell must make durable before it sends anything
// from the same Ready: a message this validator signed, a lock, or a
// decision.
type Record struct {
	Proposal *Proposal
	Vote     *Vote
	Lock     *Lock
	Commit   *Commit
}

// Lock is the value a validator precommitted (needed to re-propose it after
// a restart).
type Lock struct {
	Height uint64
	Round  int32
	Value  []byte
}

// Envelope is an outgoing message; To is a validator ID, or "" for all.
type Envelope struct {
	To  string
	Msg Message
}

// Ready is everything the machine produced since the last call, in the
// order the shell must handle it: persist, then send, then apply.
type Ready struct {
	Persist  []Record
	Send     []Envelope
	Decided  []Commit
	Evidence []Evidence
	// NeedValue asks the application for a value to propose at
	// (Height, Round): call Propose.
	NeedValue *HeightRound
	// Behind lists validators that sent messages for a height already
	// decided here (once per validator and height): the shell sends each
	// the Commit of that height from its ledger, so it can catch up.
	Behind []Lag
}

// Lag is a validator that is still at Height.
type Lag struct {
	Validator string
	Height    uint64
}

// HeightRound names a round.
type HeightRound struct {
	Height uint64
	Round  int32
}

// IsEmpty reports whether there is nothing to do.
func (r Ready) IsEmpty() bool {
	return len(r.Persist) == 0 && len(r.Send) == 0 && len(r.Decided) == 0 && len(r.Evidence) == 0 && r.NeedValue == nil && len(r.Behind) == 0
}

type signKey struct {
	height uint64
	round  int32
	step   StepType
}

type timerKey struct {
	round int32
	step  StepType
}

// Machine is one validator's consensus state.
type Machine struct {
	cfg    Config
	me     string
	signer Signer
	ver    Verifier
	valid  Validity

	height uint64
	round  int32
	step   StepType

	lockedRound int32
	lockedValue []byte
	validRound  int32
	validValue  []byte

	proposals  map[int32]*Proposal
	prevotes   map[int32]*voteSet
	precommits map[int32]*voteSet
	timers     map[timerKey]int
	once       map[timerKey]bool // "for the first time" rules, by round and rule
	needValue  bool

	signed   map[signKey]Message // everything this validator signed
	helped   map[string]uint64   // last height reported Behind for each validator
	future   []Message           // messages for height+1, replayed on arrival there
	ahead    map[uint64]Commit   // verified commits for later heights (catch-up), applied in order
	evidence map[string]bool
	ticks    int // since the last rebroadcast

	out Ready
}

// maxFuture bounds the messages kept for the next height; maxAhead the
// commits kept for later heights while catching up.
const (
	maxFuture = 4096
	maxAhead  = 64
)

// New makes a machine at height 1 (or, after Restore, where the log says).
func New(cfg Config, signer Signer, ver Verifier, valid Validity) (*Machine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Validators.Power(signer.ID()) == 0 {
		return nil, fmt.Errorf("%w: %q is not a validator", ErrConfig, signer.ID())
	}
	m := &Machine{cfg: cfg, me: signer.ID(), signer: signer, ver: ver, valid: valid,
		signed: map[signKey]Message{}, helped: map[string]uint64{}, evidence: map[string]bool{}, ahead: map[uint64]Commit{}}
	m.resetHeight(1)
	return m, nil
}

// Height is the height being decided.
func (m *Machine) Height() uint64 { return m.height }

// Round is the current round.
func (m *Machine) Round() int32 { return m.round }

// CurrentStep is the step within the current round.
func (m *Machine) CurrentStep() StepType { return m.step }

func (m *Machine) resetHeight(h uint64) {
	m.height, m.round, m.step = h, -1, StepPropose
	m.lockedRound, m.lockedValue, m.validRound, m.validValue = -1, nil, -1, nil
	m.proposals = map[int32]*Proposal{}
	m.prevotes = map[int32]*voteSet{}
	m.precommits = map[int32]*voteSet{}
	m.timers = map[timerKey]int{}
	m.once = map[timerKey]bool{}
	m.needValue = false
}

// Start begins the first round of the current height. Call it once, after
// Restore if there is a log.
func (m *Machine) Start() {
	if m.round < 0 {
		m.startRound(0)
	} else {
		m.startRound(m.round)
	}
	m.process()
}

// Ready drains what the machine produced.
func (m *Machine) Ready() Ready {
	r := m.out
	m.out = Ready{}
	return r
}

func (m *Machine) timeout(step StepType, round int32) int {
	base := map[StepType]int{StepPropose: m.cfg.TimeoutPropose, StepPrevote: m.cfg.TimeoutPrevote, StepPrecommit: m.cfg.TimeoutPrecommit}[step]
	return base + m.cfg.TimeoutDelta*int(round)
}

func (m *Machine) startRound(r int32) {
	m.round, m.step = r, StepPropose
	m.needValue = false
	if m.cfg.Validators.Proposer(m.height, r) == m.me {
		switch {
		case m.validValue != nil:
			m.propose(m.validValue, m.validRound)
		case m.signed[signKey{m.height, r, StepPropose}] != nil:
			// Proposed before a restart: send the same proposal again.
			p := m.signed[signKey{m.height, r, StepPropose}].(*Proposal)
			m.propose(p.Value, p.ValidRound)
		default:
			m.needValue = true
			m.out.NeedValue = &HeightRound{m.height, r}
		}
	}
	m.timers[timerKey{r, StepPropose}] = m.timeout(StepPropose, r)
}

// Propose gives the value for the round NeedValue asked about. A value for
// any other round is ignored.
func (m *Machine) Propose(h HeightRound, value []byte) {
	if !m.needValue || h.Height != m.height || h.Round != m.round || m.step != StepPropose {
		return
	}
	m.needValue = false
	m.propose(value, -1)
	m.process()
}

func (m *Machine) propose(value []byte, validRound int32) {
	p := &Proposal{Height: m.height, Round: m.round, ValidRound: validRound, Value: value, Proposer: m.me}
	signed := m.sign(p).(*Proposal)
	m.addProposal(signed)
}

// sign signs msg unless this validator already signed something for the
// same height, round and step, in which case that earlier message is sent
// again instead: whatever the rules want, one (h, r, step) gets one
// signature.
func (m *Machine) sign(msg Message) Message {
	var key signKey
	var b []byte
	switch v := msg.(type) {
	case *Proposal:
		key, b = signKey{v.Height, v.Round, StepPropose}, v.SignBytes(m.cfg.Network)
	case *Vote:
		key, b = signKey{v.Height, v.Round, v.Type}, v.SignBytes(m.cfg.Network)
	}
	if old, ok := m.signed[key]; ok {
		m.out.Send = append(m.out.Send, Envelope{Msg: old})
		return old
	}
	sig, err := m.signer.Sign(b)
	if err != nil {
		panic("consensus: signer failed: " + err.Error()) // a broken key store; nothing safe to do
	}
	switch v := msg.(type) {
	case *Proposal:
		v.Signature = sig
		m.out.Persist = append(m.out.Persist, Record{Proposal: v})
	case *Vote:
		v.Signature = sig
		m.out.Persist = append(m.out.Persist, Record{Vote: v})
	}
	m.signed[key] = msg
	m.out.Send = append(m.out.Send, Envelope{Msg: msg})
	return msg
}

func (m *Machine) vote(t StepType, value Hash) {
	v := m.sign(&Vote{Type: t, Height: m.height, Round: m.round, Value: value, Validator: m.me}).(*Vote)
	m.addVote(*v)
}

// Tick advances time by one tick and fires expired timeouts.
func (m *Machine) Tick() {
	if m.ticks++; m.cfg.RebroadcastTicks > 0 && m.ticks >= m.cfg.RebroadcastTicks {
		m.ticks = 0
		m.rebroadcast()
	}
	var fired []timerKey
	for k := range m.timers {
		m.timers[k]--
		if m.timers[k] <= 0 {
			fired = append(fired, k)
		}
	}
	slices.SortFunc(fired, func(a, b timerKey) int {
		return cmp.Or(cmp.Compare(a.round, b.round), cmp.Compare(a.step, b.step))
	})
	for _, k := range fired {
		delete(m.timers, k)
		if k.round != m.round {
			continue
		}
		switch {
		case k.step == StepPropose && m.step == StepPropose:
			m.step = StepPrevote
			m.vote(StepPrevote, Hash{})
		case k.step == StepPrevote && m.step == StepPrevote:
			m.step = StepPrecommit
			m.vote(StepPrecommit, Hash{})
		case k.step == StepPrecommit:
			m.startRound(m.round + 1)
		}
	}
	m.process()
}

// rebroadcast sends again every message signed at the current height from
// the previous round on, and relays the current round's proposal, in a
// fixed order.
func (m *Machine) rebroadcast() {
	var keys []signKey
	for k := range m.signed {
		if k.height == m.height && k.round >= m.round-1 {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b signKey) int {
		return cmp.Or(cmp.Compare(a.round, b.round), cmp.Compare(a.step, b.step))
	})
	for _, k := range keys {
		m.out.Send = append(m.out.Send, Envelope{Msg: m.signed[k]})
	}
	if p := m.proposals[m.round]; p != nil && p.Proposer != m.me {
		m.out.Send = append(m.out.Send, Envelope{Msg: p})
	}
}

// Recheck re-evaluates the rules: call it when data that Validity was
// waiting for has arrived.
func (m *Machine) Recheck() { m.process() }

// Step takes one message from the network. Invalid messages are refused
// with ErrInvalid (the sender should be penalised); messages for other
// heights are buffered, answered or dropped without error.
func (m *Machine) Step(msg Message) error {
	switch v := msg.(type) {
	case *Proposal:
		if err := checkProposal(m.cfg, m.ver, v); err != nil {
			return err
		}
		switch {
		case v.Height == m.height:
			m.addProposal(v)
		case v.Height == m.height+1:
			m.buffer(v)
		case v.Height < m.height:
			m.help(v.Proposer, v.Height)
		}
	case *Vote:
		if m.known(v) {
			return nil // a duplicate: already verified and counted
		}
		if err := checkVote(m.cfg, m.ver, v); err != nil {
			return err
		}
		switch {
		case v.Height == m.height:
			m.addVote(*v)
		case v.Height == m.height+1:
			m.buffer(v)
		case v.Height < m.height:
			m.help(v.Validator, v.Height)
		}
	case *Commit:
		h := v.Certificate.Height
		if h < m.height || (h > m.height && (len(m.ahead) >= maxAhead || h > m.height+maxAhead)) {
			return nil // already decided, or too far ahead to hold
		}
		if err := v.Certificate.Verify(m.cfg.Network, m.cfg.Validators, m.ver); err != nil {
			return err
		}
		if HashOf(v.Value) != v.Certificate.Value {
			return fmt.Errorf("%w: commit value does not match its certificate", ErrInvalid)
		}
		if h > m.height {
			m.ahead[h] = *v // applied once the heights before it are decided
		} else {
			m.decide(*v)
		}
	default:
		return fmt.Errorf("%w: unknown message %T", ErrInvalid, msg)
	}
	m.process()
	return nil
}

// known reports whether exactly this vote (same signature) is already held.
func (m *Machine) known(v *Vote) bool {
	if v.Height != m.height || (v.Type != StepPrevote && v.Type != StepPrecommit) {
		return false
	}
	sets := m.prevotes
	if v.Type == StepPrecommit {
		sets = m.precommits
	}
	s, ok := sets[v.Round]
	if !ok {
		return false
	}
	for _, old := range s.byVal[v.Validator] {
		if old.Value == v.Value && bytes.Equal(old.Signature, v.Signature) {
			return true
		}
	}
	return false
}

// checkProposal is everything a proposal must satisfy before it counts:
// bounds, the round's proposer, a valid signature.
func checkProposal(cfg Config, ver Verifier, p *Proposal) error {
	switch {
	case p.Round < 0 || p.ValidRound < -1 || p.ValidRound >= p.Round:
		return fmt.Errorf("%w: proposal round %d valid round %d", ErrInvalid, p.Round, p.ValidRound)
	case len(p.Value) == 0 || len(p.Value) > cfg.MaxValueBytes:
		return fmt.Errorf("%w: proposal value of %d bytes", ErrInvalid, len(p.Value))
	case p.Height == 0:
		return fmt.Errorf("%w: proposal for height 0", ErrInvalid)
	case cfg.Validators.Proposer(p.Height, p.Round) != p.Proposer:
		return fmt.Errorf("%w: %q is not the proposer of %d/%d", ErrInvalid, p.Proposer, p.Height, p.Round)
	case !ver.Verify(p.Proposer, p.SignBytes(cfg.Network), p.Signature):
		return fmt.Errorf("%w: bad proposal signature from %s", ErrInvalid, p.Proposer)
	}
	return nil
}

// checkVote is everything a vote must satisfy before it counts.
func checkVote(cfg Config, ver Verifier, v *Vote) error {
	switch {
	case v.Type != StepPrevote && v.Type != StepPrecommit:
		return fmt.Errorf("%w: vote type %d", ErrInvalid, v.Type)
	case v.Round < 0 || v.Height == 0:
		return fmt.Errorf("%w: vote for %d/%d", ErrInvalid, v.Height, v.Round)
	case cfg.Validators.Power(v.Validator) == 0:
		return fmt.Errorf("%w: %q is not a validator", ErrInvalid, v.Validator)
	case !ver.Verify(v.Validator, v.SignBytes(cfg.Network), v.Signature):
		return fmt.Errorf("%w: bad vote signature from %s", ErrInvalid, v.Validator)
	}
	return nil
}

func (m *Machine) buffer(msg Message) {
	if len(m.future) < maxFuture {
		m.future = append(m.future, msg)
	}
}

// help reports a validator that sent a message for a height already
// decided here, once per validator and height.
func (m *Machine) help(to string, h uint64) {
	if to == m.me || m.helped[to] >= h {
		return
	}
	m.helped[to] = h
	m.out.Behind = append(m.out.Behind, Lag{Validator: to, Height: h})
}

func (m *Machine) addProposal(p *Proposal) {
	if _, ok := m.proposals[p.Round]; ok {
		// A second, different proposal for one round is the proposer
		// equivocating; the first one stands.
		return
	}
	m.proposals[p.Round] = p
}

func (m *Machine) votes(t StepType, r int32) *voteSet {
	sets := m.prevotes
	if t == StepPrecommit {
		sets = m.precommits
	}
	s, ok := sets[r]
	if !ok {
		s = newVoteSet(m.cfg.Validators)
		sets[r] = s
	}
	return s
}

func (m *Machine) addVote(v Vote) {
	ev := m.votes(v.Type, v.Round).add(v)
	if ev != nil {
		key := fmt.Sprintf("%s/%d/%d/%d", v.Validator, v.Height, v.Round, v.Type)
		if !m.evidence[key] {
			m.evidence[key] = true
			m.out.Evidence = append(m.out.Evidence, *ev)
		}
	}
}

// verdict asks the application about a proposal's value.
func (m *Machine) verdict(p *Proposal) Verdict { return m.valid(p.Height, p.Value) }

// process applies the rules until none fires (a fixpoint): every rule
// either changes the step, round or height, or sets a once-flag, so this
// terminates.
func (m *Machine) process() {
	for m.apply() {
	}
}

func (m *Machine) apply() bool {
	h, r := m.height, m.round
	if r < 0 {
		return false
	}
	// Decide: a proposal and 2/3+ precommits for its value, in any round.
	for _, pr := range sortedRounds(m.precommits) {
		pc := m.precommits[pr]
		id, ok := pc.quorumValue()
		if !ok {
			continue
		}
		p := m.proposals[pr]
		if p == nil || HashOf(p.Value) != id {
			continue // the value itself has not arrived; a commit from a peer will bring it
		}
		if m.verdict(p) == NotYet {
			continue
		}
		m.decide(Commit{Value: p.Value, Certificate: Certificate{Height: h, Round: pr, Value: id, Precommits: pc.votesFor(id)}})
		return true
	}
	// Skip ahead: f+1 of the power is already in a later round.
	if nr, ok := m.laterRound(); ok {
		m.startRound(nr)
		return true
	}
	p := m.proposals[r]
	if m.step == StepPropose && p != nil {
		// A fresh proposal, or one carrying a proof of lock (2/3+ prevotes
		// for its value in its valid round) that this validator has seen.
		fresh := p.ValidRound == -1
		if (fresh || m.votes(StepPrevote, p.ValidRound).quorumFor(HashOf(p.Value))) && m.prevoteOn(p, fresh) {
			return true
		}
	}
	pv := m.votes(StepPrevote, r)
	if m.step == StepPrevote && pv.quorumAny() && !m.once[timerKey{r, StepPrevote}] {
		m.once[timerKey{r, StepPrevote}] = true
		m.timers[timerKey{r, StepPrevote}] = m.timeout(StepPrevote, r)
		return true
	}
	lockKey := timerKey{r, 0}
	if p != nil && m.step >= StepPrevote && !m.once[lockKey] && pv.quorumFor(HashOf(p.Value)) && m.verdict(p) == Accept {
		m.once[lockKey] = true
		if m.step == StepPrevote {
			m.lockedValue, m.lockedRound = p.Value, r
			m.out.Persist = append(m.out.Persist, Record{Lock: &Lock{Height: h, Round: r, Value: p.Value}})
			m.step = StepPrecommit
			m.vote(StepPrecommit, HashOf(p.Value))
		}
		m.validValue, m.validRound = p.Value, r
		return true
	}
	if m.step == StepPrevote && pv.quorumFor(Hash{}) {
		m.step = StepPrecommit
		m.vote(StepPrecommit, Hash{})
		return true
	}
	if m.votes(StepPrecommit, r).quorumAny() && !m.once[timerKey{r, StepPrecommit}] {
		m.once[timerKey{r, StepPrecommit}] = true
		m.timers[timerKey{r, StepPrecommit}] = m.timeout(StepPrecommit, r)
		return true
	}
	return false
}

// prevoteOn prevotes for a proposal's value if the application accepts it
// and the lock allows it (a fresh proposal needs no lock or the same value;
// one with a proof of lock needs a lock no later than its valid round or
// the same value), and nil if the application rejects it or the lock
// forbids it. With NotYet it does nothing and reports false.
func (m *Machine) prevoteOn(p *Proposal, fresh bool) bool {
	verdict := m.verdict(p)
	if verdict == NotYet {
		return false
	}
	sameValue := bytes.Equal(m.lockedValue, p.Value)
	lockOK := sameValue || (fresh && m.lockedRound == -1) || (!fresh && m.lockedRound <= p.ValidRound)
	m.step = StepPrevote
	if verdict == Accept && lockOK {
		m.vote(StepPrevote, HashOf(p.Value))
	} else {
		m.vote(StepPrevote, Hash{})
	}
	return true
}

// laterRound finds the smallest round above the current one in which
// validators with more than a third of the power have sent something.
func (m *Machine) laterRound() (int32, bool) {
	rounds := map[int32]map[string]bool{}
	note := func(r int32, who string) {
		if r > m.round {
			if rounds[r] == nil {
				rounds[r] = map[string]bool{}
			}
			rounds[r][who] = true
		}
	}
	for r, p := range m.proposals {
		note(r, p.Proposer)
	}
	for _, sets := range []map[int32]*voteSet{m.prevotes, m.precommits} {
		for r, s := range sets {
			for who := range s.byVal {
				note(r, who)
			}
		}
	}
	var best int32 = -1
	for r, who := range rounds {
		var power int64
		for id := range who {
			power += m.cfg.Validators.Power(id)
		}
		if m.cfg.Validators.OneThird(power) && (best == -1 || r < best) {
			best = r
		}
	}
	return best, best >= 0
}

func sortedRounds(sets map[int32]*voteSet) []int32 {
	rs := make([]int32, 0, len(sets))
	for r := range sets {
		rs = append(rs, r)
	}
	slices.Sort(rs)
	return rs
}

// decide records the commit, moves to the next height and replays the
// messages buffered for it.
func (m *Machine) decide(c Commit) {
	m.out.Persist = append(m.out.Persist, Record{Commit: &c})
	m.out.Decided = append(m.out.Decided, c)
	for k := range m.signed {
		if k.height < m.height {
			delete(m.signed, k)
		}
	}
	m.resetHeight(m.height + 1)
	if next, ok := m.ahead[m.height]; ok {
		// Catching up: the next height is already decided.
		delete(m.ahead, m.height)
		m.future = nil
		m.decide(next)
		return
	}
	m.startRound(0)
	future := m.future
	m.future = nil
	for _, msg := range future {
		switch v := msg.(type) {
		case *Proposal:
			if v.Height == m.height {
				m.addProposal(v)
			} else if v.Height == m.height+1 {
				m.buffer(v)
			}
		case *Vote:
			if v.Height == m.height {
				m.addVote(*v)
			} else if v.Height == m.height+1 {
				m.buffer(v)
			}
		}
	}
}

// Restore rebuilds the machine from its write-ahead log, before Start: the
// last decided height, the lock and every message signed at the current
// height, so that nothing signed before the crash is ever contradicted.
func (m *Machine) Restore(records []Record) error {
	for _, rec := range records {
		if rec.Commit != nil && rec.Commit.Certificate.Height >= m.height {
			m.resetHeight(rec.Commit.Certificate.Height + 1)
		}
	}
	for _, rec := range records {
		var key signKey
		var msg Message
		switch {
		case rec.Vote != nil && rec.Vote.Validator == m.me:
			key, msg = signKey{rec.Vote.Height, rec.Vote.Round, rec.Vote.Type}, rec.Vote
		case rec.Proposal != nil && rec.Proposal.Proposer == m.me:
			key, msg = signKey{rec.Proposal.Height, rec.Proposal.Round, StepPropose}, rec.Proposal
		case rec.Lock != nil && rec.Lock.Height == m.height && rec.Lock.Round > m.lockedRound:
			m.lockedRound, m.lockedValue = rec.Lock.Round, rec.Lock.Value
			m.validRound, m.validValue = rec.Lock.Round, rec.Lock.Value
			continue
		default:
			continue
		}
		if key.height != m.height {
			continue
		}
		if old, ok := m.signed[key]; ok && !sameSigned(old, msg) {
			return fmt.Errorf("%w: the log holds two %s signatures for %d/%d", ErrDoubleSign, key.step, key.height, key.round)
		}
		m.signed[key] = msg
		if key.round > m.round {
			m.round = key.round
		}
	}
	return nil
}

func sameSigned(a, b Message) bool {
	switch x := a.(type) {
	case *Vote:
		y, ok := b.(*Vote)
		return ok && x.Value == y.Value
	case *Proposal:
		y, ok := b.(*Proposal)
		return ok && bytes.Equal(x.Value, y.Value) && x.ValidRound == y.ValidRound
	}
	return false
}
