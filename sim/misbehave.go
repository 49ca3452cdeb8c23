package sim

import (
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"

	"github.com/murmur-ml/murmur/consensus"
	"github.com/murmur-ml/murmur/node"
	"github.com/murmur-ml/murmur/p2p"
)

// equivocatingNet is a Byzantine validator's network: beside each vote it
// casts it sends a second one, validly signed, for a value nobody proposed
// (a double sign). Honest validators must keep committing and record the
// evidence.
type equivocatingNet struct {
	node.Network
	network string
	signer  consensus.Signer
	sent    *atomic.Int64
}

func (e equivocatingNet) Broadcast(ctx context.Context, payload []byte) error {
	if err := e.Network.Broadcast(ctx, payload); err != nil {
		return err
	}
	msg, err := consensus.Decode(payload)
	v, ok := msg.(*consensus.Vote)
	if err != nil || !ok || v.Validator != e.signer.ID() {
		return nil
	}
	w := *v
	w.Value = consensus.HashOf(append([]byte("a second opinion"), v.Value[:]...))
	if w.Signature, err = e.signer.Sign(w.SignBytes(e.network)); err != nil {
		return err
	}
	e.sent.Add(1)
	return e.Network.Broadcast(ctx, consensus.Encode(&w))
}

// silentNet is a validator that never proposes: its proposals (first
// sends and rebroadcasts alike) stay home; its votes go out as usual.
type silentNet struct {
	node.Network
	dropped *atomic.Int64
}

func (s silentNet) Broadcast(ctx context.Context, payload []byte) error {
	if msg, err := consensus.Decode(payload); err == nil {
		if _, ok := msg.(*consensus.Proposal); ok {
			s.dropped.Add(1)
			return nil
		}
	}
	return s.Network.Broadcast(ctx, payload)
}

// spammer is a host outside the genesis that joins the network's topics
// and floods them with invalid messages: random bytes, announcements by a
// peer that is not a trainer, votes claiming an honest validator's name
// under a forged signature, and well-formed but unsigned-by-author heads.
// Honest gossip validators reject each one, which sinks the spammer's
// gossipsub score until its messages are dropped unread.
type spammer struct {
	host     host.Host
	priv     crypto.PrivKey
	network  string
	victim   string // an honest validator whose name the forged votes use
	rate     float64
	height   func() uint64
	rng      *mrand.Rand
	sent     atomic.Int64
	gossip   *p2p.Gossip
	finished chan struct{}
}

func (s *spammer) run(ctx context.Context) error {
	defer close(s.finished)
	accept := p2p.ValidatorFunc(func(context.Context, lpeer.ID, []byte) p2p.Verdict { return p2p.Accept })
	g, err := p2p.NewGossip(ctx, s.host, s.network, map[string]p2p.Validator{
		p2p.TopicUpdates: accept, p2p.TopicConsensus: accept, p2p.TopicHeads: accept})
	if err != nil {
		return fmt.Errorf("sim: spammer: %w", err)
	}
	s.gossip = g
	every := time.Duration(float64(time.Second) / s.rate)
	t := time.NewTicker(every)
	defer t.Stop()
	for k := 0; ; k++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		topic, payload := s.junk(k)
		if err := g.Publish(ctx, topic, payload); err == nil {
			s.sent.Add(1)
		}
	}
}

// junk is the k-th invalid message, cycling through the kinds.
func (s *spammer) junk(k int) (string, []byte) {
	h := s.height()
	switch k % 4 {
	case 0: // noise
		b := make([]byte, 64+s.rng.IntN(4096))
		_, _ = rand.Read(b)
		return []string{p2p.TopicUpdates, p2p.TopicConsensus, p2p.TopicHeads}[s.rng.IntN(3)], b
	case 1: // an update announced by a peer that is not a trainer
		sum, _ := mh.Sum([]byte(fmt.Sprint("spam", k)), mh.SHA2_256, -1)
		a := &p2p.Announcement{Network: s.network, Height: h + 1, Update: cid.NewCidV1(cid.DagCBOR, sum), Samples: 1 << 20}
		_ = a.Sign(s.priv)
		return p2p.TopicUpdates, a.Marshal()
	case 2: // a vote in an honest validator's name, forged
		v := &consensus.Vote{Type: consensus.StepPrecommit, Height: h + 1, Value: consensus.HashOf([]byte(fmt.Sprint(k))), Validator: s.victim,
			Signature: make([]byte, 64)}
		_, _ = rand.Read(v.Signature)
		return p2p.TopicConsensus, consensus.Encode(v)
	default: // a commit for a value with no certificate behind it
		c := &consensus.Commit{Value: []byte(fmt.Sprint("spam head", k)), Certificate: consensus.Certificate{Height: h + 1}}
		return p2p.TopicHeads, consensus.Encode(c)
	}
}
