package node

import (
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/boxo/bitswap"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/murmur-ml/murmur/consensus"
	"github.com/murmur-ml/murmur/consensus/ledger"
	"github.com/murmur-ml/murmur/consensus/wal"
	"github.com/murmur-ml/murmur/learner"
	"github.com/murmur-ml/murmur/p2p"
	"github.com/murmur-ml/murmur/storage"
)

// libp2pNet adapts p2p's gossip and bitswap to the shell's Network.
type libp2pNet struct {
	g     *p2p.Gossip
	bsw   *bitswap.Bitswap
	store *storage.Store
	priv  crypto.PrivKey
}

func (n *libp2pNet) Announce(ctx context.Context, height uint64, update cid.Cid, samples uint64) error {
	a := &p2p.Announcement{Network: "it", Height: height, Update: update, Samples: samples}
	if err := a.Sign(n.priv); err != nil {
		return err
	}
	return n.g.Publish(ctx, p2p.TopicUpdates, a.Marshal())
}

func (n *libp2pNet) messages(ctx context.Context, kind string) (<-chan []byte, error) {
	sub, err := n.g.Subscribe(kind)
	if err != nil {
		return nil, err
	}
	ch := make(chan []byte, 256)
	go func() {
		defer sub.Cancel()
		for {
			m, err := sub.Next(ctx)
			if err != nil {
				return
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

func (n *libp2pNet) Announcements(ctx context.Context) (<-chan Announced, error) {
	raw, err := n.messages(ctx, p2p.TopicUpdates)
	if err != nil {
		return nil, err
	}
	out := make(chan Announced, 256)
	go func() {
		for b := range raw {
			a, err := p2p.UnmarshalAnnouncement(b)
			if err != nil {
				continue
			}
			select {
			case out <- Announced{Author: a.Author.String(), Height: a.Height, Update: a.Update}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

func (n *libp2pNet) Broadcast(ctx context.Context, b []byte) error {
	return n.g.Publish(ctx, p2p.TopicConsensus, b)
}

func (n *libp2pNet) Consensus(ctx context.Context) (<-chan []byte, error) {
	return n.messages(ctx, p2p.TopicConsensus)
}

func (n *libp2pNet) Fetch(ctx context.Context, root cid.Cid) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := p2p.FetchDAG(ctx, n.bsw, n.store.Blockstore(), root, func(c cid.Cid, b []byte) ([]cid.Cid, error) {
		if c.Type() != cid.DagCBOR {
			return nil, nil
		}
		obj, err := storage.Decode(b)
		if err != nil {
			return nil, err
		}
		content, _ := storage.Links(obj)
		return content, nil
	})
	return err
}

type localTrainer struct {
	arch learner.Arch
	data *learner.Dataset
	seed uint64
}

func (t localTrainer) Train(_ context.Context, height uint64, base []float32) ([]float32, int, error) {
	m := &learner.Model{Arch: t.arch, Params: append([]float32(nil), base...)}
	cfg := learner.DefaultTrainConfig()
	cfg.Steps, cfg.BatchSize, cfg.LR = 4, 32, 0.01
	if _, err := learner.Train(m, t.data, cfg, mrand.New(mrand.NewPCG(t.seed, height))); err != nil {
		return nil, 0, err
	}
	return learner.Delta(m.Params, base), t.data.N(), nil
}

type fileLog struct{ w *wal.WAL }

func (f fileLog) Append(r ...[]byte) error { return f.w.Append(r...) }
func (f fileLog) Sync() error              { return f.w.Sync() }

// TestNetworkCommitsRounds runs four full peers in one process — real
// libp2p hosts over mocknet, gossipsub with the announcement and consensus
// validators, bitswap, stores, gorgonia training on synthetic data, the
// consensus machine with a file WAL — and checks that they commit the same
// heads for three heights, each the re-executed aggregate of the announced
// updates.
func TestNetworkCommitsRounds(t *testing.T) { runNetwork(t, 3, -1) }

// TestLateJoinerCatchesUp starts one of the four peers only once the
// others have committed two heights: it learns the heads from commits
// (certificates checked against the validator set), fetches the models by
// CID and votes again.
func TestLateJoinerCatchesUp(t *testing.T) { runNetwork(t, 5, 3) }

func runNetwork(t *testing.T, heights int, late int) {
	const n = 4
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mn := mocknet.New()
	defer mn.Close()
	privs := make([]crypto.PrivKey, n)
	hosts := make([]host.Host, n)
	vals := make([]consensus.Validator, n)
	for i := range n {
		privs[i], _, _ = crypto.GenerateEd25519Key(rand.Reader)
		h, err := mn.AddPeer(privs[i], ma.StringCast(fmt.Sprintf("/ip4/127.0.9.%d/tcp/4001", i+1)))
		if err != nil {
			t.Fatal(err)
		}
		hosts[i] = h
		vals[i] = consensus.Validator{ID: h.ID().String(), Power: 1}
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	if err := mn.ConnectAllButSelf(); err != nil {
		t.Fatal(err)
	}
	vs, _ := consensus.NewValidatorSet(vals)
	cc := consensus.DefaultConfig("it", vs)
	cc.TimeoutPropose, cc.TimeoutPrevote, cc.TimeoutPrecommit, cc.TimeoutDelta, cc.RebroadcastTicks = 60, 20, 20, 10, 30

	arch, _ := learner.ArchByName(learner.Arch2NN)
	genesisModel, _ := learner.NewModel(learner.Arch2NN, mrand.New(mrand.NewPCG(7, 7)))
	layers := make([]storage.Layer, len(arch.Layers))
	for i, l := range arch.Layers {
		layers[i] = storage.Layer{Name: l.Name, Shape: l.Shape}
	}
	data := learner.Synthetic(800, mrand.New(mrand.NewPCG(1, 1)))
	part, _ := learner.ParsePartition("iid")
	parts, _ := part.Split(data.Labels, n, mrand.New(mrand.NewPCG(2, 2)))

	var mu sync.Mutex
	commits := make([][]Commit, n)
	lateStart := make(chan struct{})
	var wg sync.WaitGroup
	errs := make([]error, n)

	for i := range n {
		store := storage.NewStore(dssync.MutexWrap(ds.NewMapDatastore()), nil)
		genesis, err := store.PutCheckpoint(ctx, storage.Model{Arch: arch.Name, Layers: layers, Params: genesisModel.Params}, storage.CheckpointMeta{})
		if err != nil {
			t.Fatal(err)
		}
		signer, err := p2p.NewKeySigner(privs[i])
		if err != nil {
			t.Fatal(err)
		}
		core, err := New(Config{Network: "it", Self: signer.ID(), Validator: true, Trainer: true, Rule: learner.RuleMean,
			CollectTicks: 5, Consensus: cc}, genesis, signer, p2p.PeerVerifier{})
		if err != nil {
			t.Fatal(err)
		}
		var height atomic.Uint64
		height.Store(1)
		validators := map[string]p2p.Validator{
			p2p.TopicUpdates: &p2p.AnnouncementPolicy{Network: "it", Height: height.Load},
			p2p.TopicConsensus: p2p.ValidatorFunc(func(_ context.Context, _ peer.ID, b []byte) p2p.Verdict {
				return map[consensus.GossipVerdict]p2p.Verdict{consensus.GossipAccept: p2p.Accept,
					consensus.GossipReject: p2p.Reject, consensus.GossipIgnore: p2p.Ignore}[consensus.CheckGossip(cc, p2p.PeerVerifier{}, height.Load(), b)]
			}),
		}
		g, err := p2p.NewGossip(ctx, hosts[i], "it", validators)
		if err != nil {
			t.Fatal(err)
		}
		bsw := p2p.NewBitswap(ctx, hosts[i], nil, store.Blockstore())
		defer bsw.Close()
		dir := t.TempDir()
		w, _, _, err := wal.Open(filepath.Join(dir, "wal"))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		led, err := ledger.Open(filepath.Join(dir, "ledger"), "it", vs, p2p.PeerVerifier{})
		if err != nil {
			t.Fatal(err)
		}
		defer led.Close()
		sh := &Shell{Core: core, Net: &libp2pNet{g: g, bsw: bsw, store: store, priv: privs[i]}, Store: store,
			Trainer: localTrainer{arch: arch, data: data.Subset(parts[i]), seed: uint64(i)}, WAL: fileLog{w}, Ledger: led,
			Signer: signer, Agg: learner.AggConfig{Rule: learner.RuleMean}, Tick: 20 * time.Millisecond, Log: testLogger(t),
			OnCommit: func(c Commit) {
				height.Store(c.Height + 1)
				mu.Lock()
				commits[i] = append(commits[i], c)
				if i != late && late >= 0 && len(commits[i]) == 2 {
					select {
					case <-lateStart:
					default:
						close(lateStart)
					}
				}
				enough := true
				for _, cs := range commits {
					enough = enough && len(cs) >= heights
				}
				mu.Unlock()
				if enough {
					cancel()
				}
			}}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if i == late {
				select {
				case <-lateStart:
				case <-ctx.Done():
					return
				}
			}
			errs[i] = sh.Run(ctx)
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("peer %d: %v", i, err)
		}
	}
	for i := range n {
		if len(commits[i]) < heights {
			t.Fatalf("peer %d committed %d heights", i, len(commits[i]))
		}
		for h := range heights {
			if !commits[i][h].Block.Result.Equals(commits[0][h].Block.Result.Cid) {
				t.Fatalf("height %d: peer %d's head %s differs from %s", h+1, i, commits[i][h].Block.Result, commits[0][h].Block.Result)
			}
		}
	}
	for h, c := range commits[0][:heights] {
		t.Logf("height %d: %d updates, round %d, head %s", h+1, len(c.Block.Updates), c.Certificate.Round, c.Block.Result)
	}
	if late >= 0 {
		// Each peer contributes at most one update a height: a block after
		// the first two with all four updates holds the late joiner's.
		contributed := false
		for _, c := range commits[0][2:heights] {
			contributed = contributed || len(c.Block.Updates) == n
		}
		if !contributed {
			t.Fatal("the late joiner's update is in no block after it caught up")
		}
	}
}
