package sim

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/murmur-ml/murmur/node"
)

// lossyNet loses a fraction of the gossip messages a peer receives
// (announcements, consensus messages, heads), as a lossy access link
// would once gossipsub's retries are spent. Mocknet streams are reliable,
// so block transfers (bitswap, the commit range protocol) only see the
// link's latency and bandwidth: over TCP or QUIC, loss costs time, not data.
type lossyNet struct {
	node.Network
	rate    float64
	mu      sync.Mutex
	rng     *rand.Rand
	dropped *atomic.Int64
}

func (l *lossyNet) lose() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rng.Float64() < l.rate {
		l.dropped.Add(1)
		return true
	}
	return false
}

func lossy[T any](ctx context.Context, l *lossyNet, in <-chan T) <-chan T {
	out := make(chan T, cap(in))
	go func() {
		defer close(out)
		for v := range in {
			if l.lose() {
				continue
			}
			select {
			case out <- v:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

func (l *lossyNet) Announcements(ctx context.Context) (<-chan node.Announced, error) {
	in, err := l.Network.Announcements(ctx)
	if err != nil {
		return nil, err
	}
	return lossy(ctx, l, in), nil
}

func (l *lossyNet) Consensus(ctx context.Context) (<-chan []byte, error) {
	in, err := l.Network.Consensus(ctx)
	if err != nil {
		return nil, err
	}
	return lossy(ctx, l, in), nil
}

func (l *lossyNet) Heads(ctx context.Context) (<-chan []byte, error) {
	in, err := l.Network.Heads(ctx)
	if err != nil {
		return nil, err
	}
	return lossy(ctx, l, in), nil
}
