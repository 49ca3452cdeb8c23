package consensus

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// The fake network: synchronous, seeded, no goroutines or sleeps. Time is
// the tick counter; every message gets a delivery tick.

type edSigner struct {
	id   string
	priv ed25519.PrivateKey
}

func (s edSigner) ID() string                      { return s.id }
func (s edSigner) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(s.priv, msg), nil }

// edVerifier checks real ed25519 signatures, each distinct (signer,
// message, signature) once, as a gossip layer validates a message once for
// all the copies relayed to it.
type edVerifier struct {
	keys  map[string]ed25519.PublicKey
	cache map[[32]byte]bool
}

func (v edVerifier) Verify(id string, msg, sig []byte) bool {
	h := sha256.New()
	h.Write([]byte(id))
	h.Write([]byte{0})
	h.Write(msg)
	h.Write(sig)
	var k [32]byte
	h.Sum(k[:0])
	if ok, seen := v.cache[k]; seen {
		return ok
	}
	pub, ok := v.keys[id]
	ok = ok && len(sig) == ed25519.SignatureSize && ed25519.Verify(pub, msg, sig)
	v.cache[k] = ok
	return ok
}

// Behaviours of a Byzantine validator.
const (
	honest     = iota
	equivocate // signs a second, conflicting version of every message it sends
	silent     // sends nothing
)

type inflight struct {
	at       int
	seq      int
	from, to int
	msg      Message
}

type testNode struct {
	id       string
	signer   edSigner
	m        *Machine
	wal      []Record
	decided  []Commit
	behavior int
	persists int // records persisted so far (for crash injection)
	crashes  int
}

type testNet struct {
	t        testing.TB
	rng      *rand.Rand
	cfg      Config
	ver      edVerifier
	nodes    []*testNode
	queue    []inflight
	seq      int
	now      int
	drop     float64 // probability a message is lost
	dup      float64 // probability a message is delivered twice
	maxDelay int     // delivery within 1..maxDelay ticks
	cut      func(from, to int) bool
	crashAt  map[int]int // node → persist index at which it crashes once
	evidence map[string][]Evidence
	signedBy map[signKeyV]Hash // every message sent by an honest validator
	violate  []string
	messages int
	// relay models gossipsub: an honest validator forwards every message it
	// receives for the first time to the others.
	relay bool
	seen  []map[[32]byte]bool
	// onPersist, if set, is the shell's durable write of one record; false
	// means the validator crashed during it (its log is then as the hook
	// left it in wal).
	onPersist func(i int, rec Record) bool
}

type signKeyV struct {
	who string
	signKey
}

func newTestNet(t testing.TB, n int, seed uint64, behaviors map[int]int) *testNet {
	vals := make([]Validator, n)
	ver := edVerifier{keys: map[string]ed25519.PublicKey{}, cache: map[[32]byte]bool{}}
	nodes := make([]*testNode, n)
	for i := range n {
		id := fmt.Sprintf("v%02d", i)
		seedBytes := sha256.Sum256([]byte(id))
		priv := ed25519.NewKeyFromSeed(seedBytes[:])
		vals[i] = Validator{ID: id, Power: 1}
		ver.keys[id] = priv.Public().(ed25519.PublicKey)
		nodes[i] = &testNode{id: id, signer: edSigner{id, priv}, behavior: behaviors[i]}
	}
	vs, err := NewValidatorSet(vals)
	if err != nil {
		t.Fatal(err)
	}
	net := &testNet{t: t, rng: rand.New(rand.NewPCG(seed, 99)), cfg: DefaultConfig("test", vs), ver: ver, nodes: nodes,
		maxDelay: 3, crashAt: map[int]int{}, evidence: map[string][]Evidence{}, signedBy: map[signKeyV]Hash{}, relay: true}
	for range n {
		net.seen = append(net.seen, map[[32]byte]bool{})
	}
	net.cfg.TimeoutPropose, net.cfg.TimeoutPrevote, net.cfg.TimeoutPrecommit, net.cfg.TimeoutDelta, net.cfg.RebroadcastTicks = 8, 4, 4, 2, 10
	for _, nd := range nodes {
		nd.m = net.newMachine(nd)
		nd.m.Start()
	}
	return net
}

func validValue(uint64, []byte) Verdict { return Accept }

func (n *testNet) newMachine(nd *testNode) *Machine {
	m, err := New(n.cfg, nd.signer, n.ver, validValue)
	if err != nil {
		n.t.Fatal(err)
	}
	return m
}

func (n *testNet) index(id string) int {
	for i, nd := range n.nodes {
		if nd.id == id {
			return i
		}
	}
	return -1
}

// drain handles a node's Ready as a shell would: persist, send, apply.
func (n *testNet) drain(i int) {
	nd := n.nodes[i]
	for {
		rd := nd.m.Ready()
		if rd.IsEmpty() {
			return
		}
		for _, rec := range rd.Persist {
			nd.persists++
			if n.onPersist != nil && !n.onPersist(i, rec) {
				n.restart(i)
				return
			}
			nd.wal = append(nd.wal, rec)
			if at, ok := n.crashAt[i]; ok && nd.persists == at {
				// Crash after this record is durable, before anything of
				// this Ready is sent: restart from the log.
				delete(n.crashAt, i)
				n.restart(i)
				return
			}
		}
		for _, env := range rd.Send {
			n.send(i, env)
		}
		nd.decided = append(nd.decided, rd.Decided...)
		for _, lag := range rd.Behind {
			// The shell answers from its ledger.
			if to := n.index(lag.Validator); to >= 0 && lag.Height >= 1 && int(lag.Height) <= len(nd.decided) {
				c := nd.decided[lag.Height-1]
				n.post(i, to, &c)
			}
		}
		for _, ev := range rd.Evidence {
			n.evidence[nd.id] = append(n.evidence[nd.id], ev)
		}
		if rd.NeedValue != nil {
			v := []byte(fmt.Sprintf("block h=%d r=%d by %s #%d", rd.NeedValue.Height, rd.NeedValue.Round, nd.id, n.rng.IntN(1000)))
			nd.m.Propose(*rd.NeedValue, v)
		}
	}
}

func (n *testNet) restart(i int) {
	nd := n.nodes[i]
	nd.crashes++
	m := n.newMachine(nd)
	if err := m.Restore(nd.wal); err != nil {
		n.t.Fatalf("%s restore: %v", nd.id, err)
	}
	m.Start()
	nd.m = m
	n.drain(i)
}

func (n *testNet) send(from int, env Envelope) {
	nd := n.nodes[from]
	if nd.behavior == silent {
		return
	}
	if nd.behavior == honest {
		n.recordSigned(nd.id, env.Msg)
	}
	for to := range n.nodes {
		if to == from || (env.To != "" && n.nodes[to].id != env.To) {
			continue
		}
		msg := env.Msg
		if nd.behavior == equivocate && to >= len(n.nodes)/2 {
			msg = n.conflicting(nd, msg)
		}
		n.post(from, to, msg)
	}
}

// conflicting forges a second signed version of msg for a value every
// equivocator agrees on (they collude).
func (n *testNet) conflicting(nd *testNode, msg Message) Message {
	switch v := msg.(type) {
	case *Proposal:
		p := *v
		p.Value = []byte(fmt.Sprintf("evil h=%d r=%d", v.Height, v.Round))
		p.ValidRound = -1
		p.Signature, _ = nd.signer.Sign(p.SignBytes(n.cfg.Network))
		return &p
	case *Vote:
		w := *v
		w.Value = HashOf([]byte(fmt.Sprintf("evil h=%d r=%d", v.Height, v.Round)))
		w.Signature, _ = nd.signer.Sign(w.SignBytes(n.cfg.Network))
		return &w
	}
	return msg
}

func (n *testNet) recordSigned(who string, msg Message) {
	var k signKeyV
	var h Hash
	switch v := msg.(type) {
	case *Vote:
		k, h = signKeyV{who, signKey{v.Height, v.Round, v.Type}}, v.Value
	case *Proposal:
		k, h = signKeyV{who, signKey{v.Height, v.Round, StepPropose}}, HashOf(v.Value)
	default:
		return
	}
	if old, ok := n.signedBy[k]; ok && old != h {
		n.violate = append(n.violate, fmt.Sprintf("%s double-signed %v: %s and %s", who, k.signKey, old, h))
	}
	n.signedBy[k] = h
}

func (n *testNet) post(from, to int, msg Message) {
	if n.cut != nil && n.cut(from, to) {
		return
	}
	if n.rng.Float64() < n.drop {
		return
	}
	copies := 1
	if n.rng.Float64() < n.dup {
		copies = 2
	}
	for range copies {
		n.seq++
		n.messages++
		n.queue = append(n.queue, inflight{at: n.now + 1 + n.rng.IntN(n.maxDelay), seq: n.seq, from: from, to: to, msg: msg})
	}
}

// run advances the network tick by tick until every honest node has decided
// heights or maxTicks pass.
func (n *testNet) run(heights, maxTicks int) {
	for _, i := range n.order() {
		n.drain(i)
	}
	for ; n.now < maxTicks && !n.allDecided(heights); n.now++ {
		var due, later []inflight
		for _, f := range n.queue {
			if f.at <= n.now {
				due = append(due, f)
			} else {
				later = append(later, f)
			}
		}
		n.queue = later
		// Reorder: deliveries due at the same tick arrive in random order.
		n.rng.Shuffle(len(due), func(a, b int) { due[a], due[b] = due[b], due[a] })
		for _, f := range due {
			// Round-trip through the wire codec, as gossip would.
			msg, err := Decode(Encode(f.msg))
			if err != nil {
				n.t.Fatalf("codec: %v", err)
			}
			_ = n.nodes[f.to].m.Step(msg)
			n.drain(f.to)
			if n.relay && n.nodes[f.to].behavior == honest {
				if _, isCommit := msg.(*Commit); !isCommit {
					id := sha256.Sum256(Encode(msg))
					if !n.seen[f.to][id] {
						n.seen[f.to][id] = true
						for to := range n.nodes {
							if to != f.to && to != f.from {
								n.post(f.to, to, msg)
							}
						}
					}
				}
			}
		}
		for _, i := range n.order() {
			n.nodes[i].m.Tick()
			n.drain(i)
		}
	}
}

func (n *testNet) order() []int {
	o := make([]int, len(n.nodes))
	for i := range o {
		o[i] = i
	}
	n.rng.Shuffle(len(o), func(a, b int) { o[a], o[b] = o[b], o[a] })
	return o
}

func (n *testNet) allDecided(heights int) bool {
	for _, nd := range n.nodes {
		if nd.behavior == honest && len(nd.decided) < heights {
			return false
		}
	}
	return true
}

// checkAgreement returns the safety violations: two honest validators
// deciding different values at one height, an honest double sign, or a
// decision without a valid certificate.
func (n *testNet) checkAgreement() []string {
	out := slices.Clone(n.violate)
	byHeight := map[uint64]Hash{}
	for _, nd := range n.nodes {
		if nd.behavior != honest {
			continue
		}
		for _, c := range nd.decided {
			h := HashOf(c.Value)
			if old, ok := byHeight[c.Certificate.Height]; ok && old != h {
				out = append(out, fmt.Sprintf("height %d: %s decided %s, another honest validator %s", c.Certificate.Height, nd.id, h, old))
			}
			byHeight[c.Certificate.Height] = h
			if err := c.Certificate.Verify(n.cfg.Network, n.cfg.Validators, n.ver); err != nil {
				out = append(out, fmt.Sprintf("%s decided height %d on a bad certificate: %v", nd.id, c.Certificate.Height, err))
			}
		}
	}
	return out
}
