package p2p

import (
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Gossip queues. gossipsub's defaults (32 messages waiting for validation,
// 32 RPCs queued per peer) drop messages silently in a burst: a height in
// which 100 trainers announce at once, or a peer starved of CPU for a
// moment (two loaded cores in CI lost 0.9% of honest announcements).
// Messages are at most MaxMessageBytes, so the bound on memory stays
// modest: 256 × 64 KiB per queue.
const (
	validateQueue = 256
	outboundQueue = 256
)

// Drops counts what gossipsub threw away without judging it: each is a
// message (or, outbound, an RPC of messages and control) some peer may
// never see (house rule: counted drops).
type Drops struct {
	// Outbound: RPCs to a peer dropped because its queue was full.
	Outbound uint64
	// ValidationQueue: received messages dropped because the validation
	// queue was full or the validators were throttled.
	ValidationQueue uint64
	// Undelivered: accepted messages a local subscriber was too slow for.
	Undelivered uint64
}

// dropTracer is gossipsub's raw tracer reduced to the drop events. Its
// methods run on gossipsub's goroutines, hence the atomics.
type dropTracer struct {
	outbound, validation, undelivered atomic.Uint64
	metrics                           *Metrics
}

func (d *dropTracer) drops() Drops {
	return Drops{Outbound: d.outbound.Load(), ValidationQueue: d.validation.Load(), Undelivered: d.undelivered.Load()}
}

func (d *dropTracer) DropRPC(*pubsub.RPC, peer.ID) {
	d.outbound.Add(1)
	d.metrics.drop("outbound_queue")
}

func (d *dropTracer) RejectMessage(_ *pubsub.Message, reason string) {
	if reason == pubsub.RejectValidationQueueFull || reason == pubsub.RejectValidationThrottled {
		d.validation.Add(1)
		d.metrics.drop("validation_queue")
	}
}

func (d *dropTracer) UndeliverableMessage(*pubsub.Message) {
	d.undelivered.Add(1)
	d.metrics.drop("slow_subscriber")
}

func (*dropTracer) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (*dropTracer) OnClosedOutboundStream(peer.ID)                       {}
func (*dropTracer) Join(string)                                          {}
func (*dropTracer) Leave(string)                                         {}
func (*dropTracer) Graft(peer.ID, string)                                {}
func (*dropTracer) Prune(peer.ID, string)                                {}
func (*dropTracer) ValidateMessage(*pubsub.Message)                      {}
func (*dropTracer) DeliverMessage(*pubsub.Message)                       {}
func (*dropTracer) DuplicateMessage(*pubsub.Message)                     {}
func (*dropTracer) ThrottlePeer(peer.ID)                                 {}
func (*dropTracer) RecvRPC(*pubsub.RPC)                                  {}
func (*dropTracer) SendRPC(*pubsub.RPC, peer.ID)                         {}
func (*dropTracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
