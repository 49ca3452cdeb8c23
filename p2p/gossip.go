package p2p

import (
	"context"
	"crypto/sha256"
	"fmt"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// MaxMessageBytes bounds every gossip message (DESIGN.md §1.4): gossip
// carries CIDs and signatures, never tensors.
const MaxMessageBytes = 64 << 10

// Topic kinds.
const (
	TopicUpdates   = "updates"
	TopicConsensus = "consensus"
	TopicHeads     = "heads"
)

// TopicName is the full gossipsub topic of a kind in a network.
func TopicName(network, kind string) string { return "/murmur/" + network + "/" + kind + "/1" }

// Verdict is a validator's answer, as gossipsub understands it.
type Verdict = pubsub.ValidationResult

const (
	Accept = pubsub.ValidationAccept
	Reject = pubsub.ValidationReject // penalises the peer that sent it
	Ignore = pubsub.ValidationIgnore // e.g. a future height not checkable yet
)

// Validator judges the payload of one topic. It is the consumer's (node's)
// knowledge of what a payload means, plugged into the gossip layer.
type Validator interface {
	Validate(ctx context.Context, from peer.ID, data []byte) Verdict
}

// ValidatorFunc adapts a function.
type ValidatorFunc func(ctx context.Context, from peer.ID, data []byte) Verdict

// Validate calls f.
func (f ValidatorFunc) Validate(ctx context.Context, from peer.ID, data []byte) Verdict {
	return f(ctx, from, data)
}

// messageID identifies one publication: the payload's hash with its
// publisher and sequence number. Relays of it are one message; the same
// bytes published again (an announcement re-sent because the first went
// out before the mesh formed, a consensus rebroadcast after a partition)
// are a new one. A payload-only ID would make gossipsub drop those for as
// long as its seen-cache keeps IDs, which is up to a minute whatever the
// TTL (its cache is swept once a minute); the applications above are
// idempotent, so duplicates cost bandwidth only.
func messageID(m *pb.Message) string {
	h := sha256.New()
	h.Write(m.Data)
	h.Write(m.From)
	h.Write(m.Seqno)
	return string(h.Sum(nil))
}

// GraylistThreshold is the score below which a peer's messages are
// dropped unprocessed.
const GraylistThreshold = -80

// scoreParams make invalid messages expensive: each one delivered costs
// −10 (squared counter, so ten cost −1000), decaying over about a minute,
// while honest peers earn a little for first deliveries.
func scoreParams(network string, kinds []string) (*pubsub.PeerScoreParams, *pubsub.PeerScoreThresholds) {
	topics := map[string]*pubsub.TopicScoreParams{}
	for _, k := range kinds {
		topics[TopicName(network, k)] = &pubsub.TopicScoreParams{
			TopicWeight:                    1,
			TimeInMeshWeight:               0.01,
			TimeInMeshQuantum:              time.Second,
			TimeInMeshCap:                  100,
			FirstMessageDeliveriesWeight:   1,
			FirstMessageDeliveriesDecay:    pubsub.ScoreParameterDecay(10 * time.Minute),
			FirstMessageDeliveriesCap:      50,
			InvalidMessageDeliveriesWeight: -10,
			InvalidMessageDeliveriesDecay:  pubsub.ScoreParameterDecay(time.Minute),
		}
	}
	p := &pubsub.PeerScoreParams{
		Topics:                   topics,
		AppSpecificScore:         func(peer.ID) float64 { return 0 },
		IPColocationFactorWeight: 0, // tests and testnets run many peers per IP
		BehaviourPenaltyWeight:   -1,
		BehaviourPenaltyDecay:    pubsub.ScoreParameterDecay(time.Minute),
		DecayInterval:            time.Second,
		DecayToZero:              0.01,
		RetainScore:              10 * time.Minute,
		SkipAtomicValidation:     false,
	}
	t := &pubsub.PeerScoreThresholds{
		GossipThreshold:             -10,
		PublishThreshold:            -50,
		GraylistThreshold:           GraylistThreshold,
		AcceptPXThreshold:           10,
		OpportunisticGraftThreshold: 5,
	}
	return p, t
}

// Gossip is the node's gossipsub: its topics, validated.
type Gossip struct {
	ps      *pubsub.PubSub
	topics  map[string]*pubsub.Topic
	network string
	metrics *Metrics
	drops   *dropTracer
}

// Dropped counts the messages gossipsub has thrown away unjudged so far.
func (g *Gossip) Dropped() Drops { return g.drops.drops() }

// GossipOption configures NewGossip.
type GossipOption func(*gossipOptions)

type gossipOptions struct {
	inspect func(map[peer.ID]float64)
	period  time.Duration
	metrics *Metrics
	seenTTL time.Duration
}

// WithSeenTTL sets how long a message ID is remembered (gossipsub sweeps
// its cache once a minute, so shorter values act as up to a minute).
func WithSeenTTL(d time.Duration) GossipOption { return func(o *gossipOptions) { o.seenTTL = d } }

// WithScoreInspector receives every peer's score periodically (tests,
// metrics).
func WithScoreInspector(f func(map[peer.ID]float64), every time.Duration) GossipOption {
	return func(o *gossipOptions) { o.inspect, o.period = f, every }
}

// WithMetrics counts messages by topic and verdict.
func WithMetrics(m *Metrics) GossipOption { return func(o *gossipOptions) { o.metrics = m } }

// NewGossip starts gossipsub on h and joins the network's topics, each with
// its validator (a nil validator accepts everything — only for tests of
// misbehaving peers).
func NewGossip(ctx context.Context, h host.Host, network string, validators map[string]Validator, opts ...GossipOption) (*Gossip, error) {
	var o gossipOptions
	for _, f := range opts {
		f(&o)
	}
	kinds := []string{TopicUpdates, TopicConsensus, TopicHeads}
	params, thresholds := scoreParams(network, kinds)
	drops := &dropTracer{metrics: o.metrics}
	psOpts := []pubsub.Option{
		pubsub.WithRawTracer(drops),
		pubsub.WithValidateQueueSize(validateQueue),
		pubsub.WithPeerOutboundQueueSize(outboundQueue),
		pubsub.WithMessageIdFn(messageID),
		pubsub.WithPeerScore(params, thresholds),
		pubsub.WithMaxMessageSize(MaxMessageBytes + 1024), // payload bound plus envelope
		pubsub.WithMessageSignaturePolicy(pubsub.StrictSign),
	}
	if o.seenTTL > 0 {
		psOpts = append(psOpts, pubsub.WithSeenMessagesTTL(o.seenTTL))
	}
	if o.inspect != nil {
		psOpts = append(psOpts, pubsub.WithPeerScoreInspect(pubsub.ExtendedPeerScoreInspectFn(func(m map[peer.ID]*pubsub.PeerScoreSnapshot) {
			scores := make(map[peer.ID]float64, len(m))
			for id, s := range m {
				scores[id] = s.Score
			}
			o.inspect(scores)
		}), o.period))
	}
	ps, err := pubsub.NewGossipSub(ctx, h, psOpts...)
	if err != nil {
		return nil, fmt.Errorf("p2p: gossipsub: %w", err)
	}
	g := &Gossip{ps: ps, topics: map[string]*pubsub.Topic{}, network: network, metrics: o.metrics, drops: drops}
	for _, k := range kinds {
		name := TopicName(network, k)
		if v := validators[k]; v != nil {
			if err := ps.RegisterTopicValidator(name, g.wrap(k, v), pubsub.WithValidatorTimeout(5*time.Second)); err != nil {
				return nil, err
			}
		}
		t, err := ps.Join(name)
		if err != nil {
			return nil, fmt.Errorf("p2p: join %s: %w", name, err)
		}
		g.topics[k] = t
	}
	return g, nil
}

// wrap bounds the payload before the topic's validator sees it, and counts.
func (g *Gossip) wrap(kind string, v Validator) pubsub.ValidatorEx {
	return func(ctx context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
		verdict := Reject
		if len(m.Data) <= MaxMessageBytes {
			verdict = v.Validate(ctx, from, m.Data)
		}
		g.metrics.message(kind, verdict, len(m.Data))
		return verdict
	}
}

// Publish sends data on a topic (after the local validator accepts it).
func (g *Gossip) Publish(ctx context.Context, kind string, data []byte) error {
	t, ok := g.topics[kind]
	if !ok {
		return fmt.Errorf("p2p: no topic %q", kind)
	}
	if len(data) > MaxMessageBytes {
		return fmt.Errorf("p2p: %d-byte message exceeds %d", len(data), MaxMessageBytes)
	}
	return t.Publish(ctx, data)
}

// Subscribe returns the messages of a topic that passed validation.
func (g *Gossip) Subscribe(kind string) (*pubsub.Subscription, error) {
	t, ok := g.topics[kind]
	if !ok {
		return nil, fmt.Errorf("p2p: no topic %q", kind)
	}
	return t.Subscribe()
}

// Peers lists the peers in a topic's mesh or fanout.
func (g *Gossip) Peers(kind string) []peer.ID { return g.topics[kind].ListPeers() }
