package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/boxo/bitswap"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/murmur-ml/murmur/consensus"
	"github.com/murmur-ml/murmur/node"
	"github.com/murmur-ml/murmur/p2p"
	"github.com/murmur-ml/murmur/storage"
)

// network adapts p2p's gossip, bitswap and range protocol to node.Network.
type network struct {
	name  string
	host  host.Host
	g     *p2p.Gossip
	bsw   *bitswap.Bitswap
	store *storage.Store
	priv  crypto.PrivKey
	// fetchTimeout bounds one DAG fetch.
	fetchTimeout time.Duration
	// authors remembers who announced each recent update: Fetch asks the
	// author directly before falling back to bitswap. Written by the
	// announcement relay, read by fetches.
	mu      sync.Mutex
	authors map[string]peer.ID
	direct  *atomic.Int64 // block bytes fetched from authors directly
}

// maxAuthors bounds the update → author hints (a few heights' worth; a
// model's CID → the validator that published its commit, too).
const maxAuthors = 4096

func (n *network) noteAuthor(update cid.Cid, author peer.ID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.authors == nil || len(n.authors) >= maxAuthors {
		n.authors = map[string]peer.ID{} // forget the older heights at once
	}
	n.authors[update.KeyString()] = author
}

func (n *network) author(update cid.Cid) (peer.ID, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p, ok := n.authors[update.KeyString()]
	return p, ok
}

var _ node.Network = (*network)(nil)

func (n *network) Announce(ctx context.Context, height uint64, update cid.Cid, samples uint64) error {
	a := &p2p.Announcement{Network: n.name, Height: height, Update: update, Samples: samples}
	if err := a.Sign(n.priv); err != nil {
		return err
	}
	return n.g.Publish(ctx, p2p.TopicUpdates, a.Marshal())
}

// messages relays a topic's validated payloads into a bounded channel; a
// slow consumer blocks the relay (gossipsub then drops for the
// subscription, which it counts) rather than growing memory.
func (n *network) messages(ctx context.Context, kind string) (<-chan []byte, error) {
	return n.relay(ctx, kind, nil)
}

// relay is messages with a look at each one first (who published it).
func (n *network) relay(ctx context.Context, kind string, look func(data []byte, publisher peer.ID)) (<-chan []byte, error) {
	sub, err := n.g.Subscribe(kind)
	if err != nil {
		return nil, err
	}
	ch := make(chan []byte, 256)
	go func() {
		defer sub.Cancel()
		defer close(ch)
		for {
			m, err := sub.Next(ctx)
			if err != nil {
				return
			}
			if look != nil {
				look(m.Data, m.GetFrom())
			}
			select {
			case ch <- m.Data:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}

func (n *network) Announcements(ctx context.Context) (<-chan node.Announced, error) {
	raw, err := n.messages(ctx, p2p.TopicUpdates)
	if err != nil {
		return nil, err
	}
	out := make(chan node.Announced, 256)
	go func() {
		for b := range raw {
			a, err := p2p.UnmarshalAnnouncement(b)
			if err != nil {
				continue // validated already; cannot fail
			}
			if !a.IsIntent() {
				n.noteAuthor(a.Update, a.Author)
			}
			select {
			case out <- node.Announced{Author: a.Author.String(), Height: a.Height, Update: a.Update}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

func (n *network) Broadcast(ctx context.Context, b []byte) error {
	return n.g.Publish(ctx, p2p.TopicConsensus, b)
}

func (n *network) Consensus(ctx context.Context) (<-chan []byte, error) {
	return n.messages(ctx, p2p.TopicConsensus)
}

func (n *network) PublishHead(ctx context.Context, b []byte) error {
	return n.g.Publish(ctx, p2p.TopicHeads, b)
}

// Heads relays commits; the validator that published one computed (or
// fetched) its model, so it is whom Fetch asks first for that model.
func (n *network) Heads(ctx context.Context) (<-chan []byte, error) {
	return n.relay(ctx, p2p.TopicHeads, func(b []byte, from peer.ID) {
		msg, err := consensus.Decode(b)
		if err != nil {
			return
		}
		cm, ok := msg.(*consensus.Commit)
		if !ok {
			return
		}
		if obj, err := storage.Decode(cm.Value); err == nil {
			if blk, ok := obj.(*storage.Block); ok {
				n.noteAuthor(blk.Result.Cid, from)
			}
		}
	})
}

// FetchCommits asks connected peers in turn for the commits from height on
// and returns the first non-empty answer.
func (n *network) FetchCommits(ctx context.Context, from uint64) ([][]byte, error) {
	var errs []error
	for _, p := range n.host.Network().Peers() {
		items, err := p2p.FetchRange(ctx, n.host, p, n.name, from, 32)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
			continue
		}
		if len(items) > 0 {
			return items, nil
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return nil, nil
}

// Fetch brings root and every block it links to into the store, verified.
func (n *network) Fetch(ctx context.Context, root cid.Cid) error {
	ctx, cancel := context.WithTimeout(ctx, n.fetchTimeout)
	defer cancel()
	if a, ok := n.author(root); ok && a != n.host.ID() {
		// Half the budget for the author: one that is gone, overloaded or
		// lying leaves time for anyone else who has it (bitswap).
		dctx, dcancel := context.WithTimeout(ctx, n.fetchTimeout/2)
		_, size, err := p2p.FetchDAGFrom(dctx, n.host, a, n.name, n.store.Blockstore(), root, dagLinks)
		dcancel()
		if err == nil {
			n.direct.Add(int64(size))
			return nil
		}
	}
	_, err := p2p.FetchDAG(ctx, n.bsw, n.store.Blockstore(), root, dagLinks)
	return err
}

// dagLinks lists what a murmur object needs present to be used: a
// checkpoint's or update's shards (not its lineage).
func dagLinks(c cid.Cid, b []byte) ([]cid.Cid, error) {
	if c.Type() != cid.DagCBOR {
		return nil, nil
	}
	obj, err := storage.Decode(b)
	if err != nil {
		return nil, err
	}
	content, _ := storage.Links(obj)
	return content, nil
}

// peerCount is how many peers the host is connected to (status).
func peerCount(h host.Host) int { return len(h.Network().Peers()) }
