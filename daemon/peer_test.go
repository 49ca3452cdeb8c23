package daemon

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/murmur-ml/murmur/learner"
	"github.com/murmur-ml/murmur/node"
	"github.com/murmur-ml/murmur/storage"
)

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

var testLevel = slog.LevelWarn

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: testLevel}))
}

// cluster is a network of full peers in one process: real libp2p hosts over
// mocknet, gossipsub with validators, bitswap, stores, gorgonia training on
// synthetic data, consensus with file write-ahead logs and ledgers.
type cluster struct {
	t      testing.TB
	mn     mocknet.Mocknet
	gen    *Genesis
	hosts  []host.Host
	homes  []string
	stores []*storage.Store
	data   []*learner.Dataset
	test   *learner.Dataset
	// tweak, if set, changes peer i's config before it starts.
	tweak func(i int, cfg *Config)

	mu      sync.Mutex
	commits []map[uint64]node.Commit
	peers   []*Peer // the current run of each peer
	running []context.CancelFunc
	done    []chan error
}

// newCluster makes validators voting peers plus extra trainer-only ones.
func newCluster(t testing.TB, validators, extra int, tweak func(*Genesis)) *cluster {
	n := validators + extra
	c := &cluster{t: t, mn: mocknet.New(), commits: make([]map[uint64]node.Commit, n), peers: make([]*Peer, n), running: make([]context.CancelFunc, n), done: make([]chan error, n)}
	t.Cleanup(func() { c.mn.Close() })
	var vals []Validator
	for i := range n {
		priv, _, _ := crypto.GenerateEd25519Key(rand.Reader)
		h, err := c.mn.AddPeer(priv, ma.StringCast(fmt.Sprintf("/ip4/127.0.9.%d/tcp/4001", i+1)))
		if err != nil {
			t.Fatal(err)
		}
		c.hosts = append(c.hosts, h)
		if i < validators {
			vals = append(vals, Validator{ID: h.ID().String(), Power: 1})
		}
		c.homes = append(c.homes, t.TempDir())
		c.stores = append(c.stores, storage.NewStore(dssync.MutexWrap(ds.NewMapDatastore()), nil))
		c.commits[i] = map[uint64]node.Commit{}
	}
	if err := c.mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	g := DefaultGenesis("it", vals)
	g.Aggregation.Rule = learner.RuleMean
	g.Train.Steps, g.Train.Batch, g.Train.LR = 4, 32, 0.01
	g.Round = RoundSpec{TickMillis: 20, CollectTicks: 25, TimeoutPropose: 60, TimeoutPrevote: 20, TimeoutPrecommit: 20,
		TimeoutDelta: 10, RebroadcastTicks: 30, HeadTicks: 10}
	if tweak != nil {
		tweak(g)
	}
	cid, err := g.GenesisModel(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	g.Model.CID = cid.String()
	c.gen = g
	all := learner.Synthetic(200*n, mrand.New(mrand.NewPCG(1, 1)))
	part, _ := learner.ParsePartition("iid")
	parts, _ := part.Split(all.Labels, n, mrand.New(mrand.NewPCG(2, 2)))
	for i := range n {
		c.data = append(c.data, all.Subset(parts[i]))
	}
	c.test = learner.Synthetic(200, mrand.New(mrand.NewPCG(3, 3)))
	return c
}

// start runs peer i (again) on its host, home and store; it connects to
// every running peer.
func (c *cluster) start(i int) *Peer {
	c.t.Helper()
	cfg := DefaultConfig()
	cfg.Data.EvalSamples = 200
	if c.tweak != nil {
		c.tweak(i, &cfg)
	}
	p, err := New(context.Background(), c.homes[i], cfg, c.gen, WithHost(c.hosts[i]), WithStore(c.stores[i]),
		WithData(c.data[i], c.test), WithLogger(testLogger(c.t).With("i", i)), WithFetchTimeout(10*time.Second),
		WithOnCommit(func(cm node.Commit) {
			c.mu.Lock()
			c.commits[i][cm.Height] = cm
			c.mu.Unlock()
		}))
	if err != nil {
		c.t.Fatalf("peer %d: %v", i, err)
	}
	for j, h := range c.hosts {
		if j != i {
			if _, err := c.mn.ConnectPeers(c.hosts[i].ID(), h.ID()); err != nil {
				c.t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	c.running[i], c.done[i], c.peers[i] = cancel, done, p
	go func() { done <- p.Run(ctx) }()
	return p
}

// stop ends peer i gracefully and waits for it.
func (c *cluster) stop(i int) {
	c.t.Helper()
	c.running[i]()
	if err := <-c.done[i]; err != nil {
		c.t.Fatalf("peer %d: %v", i, err)
	}
	c.running[i] = nil
	// As a stopped process would, drop its connections: a restart then
	// meets its peers afresh.
	for _, p := range c.hosts[i].Network().Peers() {
		_ = c.hosts[i].Network().ClosePeer(p)
	}
}

func (c *cluster) stopAll() {
	for i := range c.running {
		if c.running[i] != nil {
			c.stop(i)
		}
	}
}

func (c *cluster) height(i int) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var h uint64
	for k := range c.commits[i] {
		h = max(h, k)
	}
	return h
}

// waitFor waits (on commits, with a deadline far above what it needs) until
// every listed peer committed height h.
func (c *cluster) waitFor(h uint64, peers ...int) {
	c.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		ok := true
		for _, i := range peers {
			ok = ok && c.height(i) >= h
		}
		if ok {
			return
		}
		for i, d := range c.done {
			if c.running[i] == nil {
				continue
			}
			select {
			case err := <-d:
				c.t.Fatalf("peer %d stopped: %v", i, err)
			default:
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("peers %v did not reach height %d", peers, h)
}

// agree checks that every listed peer committed the same block at each
// height up to h.
func (c *cluster) agree(h uint64, peers ...int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := uint64(1); k <= h; k++ {
		var want string
		for _, i := range peers {
			cm, ok := c.commits[i][k]
			if !ok {
				continue // committed before this peer's run (restart) or caught up past
			}
			got := cm.Block.Result.String()
			if want == "" {
				want = got
			} else if got != want {
				c.t.Fatalf("height %d: peer %d has head %s, another %s", k, i, got, want)
			}
		}
	}
}

func TestPeersCommitIdenticalHeads(t *testing.T) {
	c := newCluster(t, 4, 0, nil)
	for i := range 4 {
		c.start(i)
	}
	defer c.stopAll()
	c.waitFor(3, 0, 1, 2, 3)
	c.agree(3, 0, 1, 2, 3)
	c.mu.Lock()
	for h := uint64(1); h <= 3; h++ {
		cm := c.commits[0][h]
		t.Logf("height %d: %d updates, round %d, head %s", h, len(cm.Block.Updates), cm.Certificate.Round, cm.Block.Result)
	}
	c.mu.Unlock()
}

// A peer that is not a validator starts once the others have committed two
// heights: it learns the head from the heads topic, fetches the commits it
// missed over the range protocol (checking every certificate), fetches the
// model by CID and contributes from the next height.
func TestLateTrainerCatchesUp(t *testing.T) {
	c := newCluster(t, 4, 1, nil)
	for i := range 4 {
		c.start(i)
	}
	defer c.stopAll()
	c.waitFor(2, 0, 1, 2, 3)
	late := c.start(4)
	joined := c.height(0)
	c.waitFor(joined+3, 0, 4)
	c.agree(joined+3, 0, 1, 2, 3, 4)
	if st := late.Status(); st.Role != "trainer" {
		t.Fatalf("the late peer's role is %q", st.Role)
	}
	// The ledger API names each update's author: the late trainer's are in
	// blocks after it caught up.
	api := httptest.NewServer(c.peers[0].Handler())
	defer api.Close()
	var in []uint64
	for h := joined + 1; h <= joined+3; h++ {
		var v CommitView
		if code := getJSON(t, api.URL+fmt.Sprintf("/commit/%d", h), &v); code != http.StatusOK {
			t.Fatalf("/commit/%d: %d", h, code)
		}
		if v.Height != h || len(v.Signers) < 3 || v.Result == "" {
			t.Fatalf("/commit/%d: %+v", h, v)
		}
		for _, u := range v.Updates {
			if u.Author == "" || u.Samples == 0 {
				t.Fatalf("/commit/%d: update %s without its author", h, u.CID)
			}
			if u.Author == late.Status().PeerID {
				in = append(in, h)
			}
		}
	}
	t.Logf("the late trainer (joined at height %d) is in blocks %v", joined, in)
	if len(in) == 0 {
		t.Fatal("the late trainer's update is in no block after it caught up")
	}
	for path, want := range map[string]int{"/commit/0": http.StatusBadRequest, "/commit/x": http.StatusBadRequest, "/commit/100000": http.StatusNotFound} {
		if code := getJSON(t, api.URL+path, &CommitView{}); code != want {
			t.Errorf("%s: %d, want %d", path, code, want)
		}
	}
}

// getJSON fetches url and decodes a 200 answer into v; it returns the status.
func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

// A validator stopped mid-run and started again from its home resumes from
// its write-ahead log and ledger: the others keep committing without it
// (3 of 4 is a quorum), it catches up, and the heads agree.
func TestValidatorRestartsFromLog(t *testing.T) {
	testLevel = slog.LevelInfo
	defer func() { testLevel = slog.LevelWarn }()
	c := newCluster(t, 4, 0, nil)
	for i := range 4 {
		c.start(i)
	}
	defer c.stopAll()
	c.waitFor(2, 0, 1, 2, 3)
	c.stop(3)
	before := c.height(3)
	c.waitFor(before+2, 0, 1, 2)
	p := c.start(3)
	if st := p.Status(); st.RestoredFromHeight < before {
		t.Fatalf("restarted at height %d, had committed %d", st.RestoredFromHeight, before)
	}
	target := c.height(0) + 2
	c.waitFor(target, 0, 1, 2, 3)
	c.agree(target, 0, 1, 2, 3)
	for i := range 4 {
		if n := c.peers[i].Status().Equivocations; n != 0 {
			t.Fatalf("peer %d saw %d equivocations", i, n)
		}
	}
}

// With DP and a budget that allows two updates, every trainer contributes
// twice, then says so and stops; the network keeps committing only while
// there are updates. Update-level DP costs one Gaussian mechanism per
// update; DP-SGD one sampled Gaussian mechanism per local step, at the rate
// batch/n, and the update leaves as trained (no second clip and noise).
func TestPrivacyBudgetStopsContributing(t *testing.T) {
	for _, tc := range []struct {
		mode        string
		sigma, clip float64
		q           float64 // sampling rate of one run
		runs        int     // runs per update
	}{
		{DPUpdate, 2, 1e-4, 1, 1},
		{DPSample, 1, 0.5, 32.0 / 200, 4}, // batch 32 of 200 samples, 4 steps
	} {
		t.Run(tc.mode, func(t *testing.T) {
			b, _ := learner.NewBudget(100, 1e-5)
			e1, _ := b.After(tc.sigma, tc.q, tc.runs)
			e2, _ := b.After(tc.sigma, tc.q, 2*tc.runs)
			c := newCluster(t, 4, 0, func(g *Genesis) {
				g.DP = &DPSpec{Mode: tc.mode, Clip: tc.clip, Sigma: tc.sigma, Delta: 1e-5, Epsilon: e2 * 1.01}
			})
			peers := make([]*Peer, 4)
			for i := range 4 {
				peers[i] = c.start(i)
			}
			defer c.stopAll()
			c.waitFor(2, 0, 1, 2, 3)
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				all := true
				for _, p := range peers {
					all = all && p.Status().PrivacyExhausted
				}
				if all {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			for i, p := range peers {
				st := p.Status()
				if !st.PrivacyExhausted || st.EpsilonSpent > c.gen.DP.Epsilon {
					t.Fatalf("peer %d: exhausted %v, ε spent %.3f of %.3f", i, st.PrivacyExhausted, st.EpsilonSpent, c.gen.DP.Epsilon)
				}
			}
			if h := c.height(0); h != 2 {
				t.Fatalf("committed %d heights with a two-update budget", h)
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			u := c.commits[0][1].Block.Updates[0].Cid
			obj, err := c.stores[0].GetObject(context.Background(), u)
			if err != nil {
				t.Fatal(err)
			}
			up := obj.(*storage.Update)
			if up.Sigma != tc.sigma || up.Clip != tc.clip || math.Abs(up.Epsilon-e1) > 1e-9*e1 {
				t.Fatalf("update records clip %v σ %v ε %v, want %v %v %v", up.Clip, up.Sigma, up.Epsilon, tc.clip, tc.sigma, e1)
			}
			t.Logf("%s: ε %.3f after one update, %.3f after two", tc.mode, e1, e2)
		})
	}
}

// The store collects as the ledger grows: every ledger block stays with
// the manifests of its updates and models (so the lineage, and who
// contributed, stays readable), tensors of updates older than keep_updates
// heights go, recent ones and the head stay, and a peer joining later
// still catches up and trains on the head.
func TestStoreCollectsLineage(t *testing.T) {
	c := newCluster(t, 4, 1, nil)
	c.tweak = func(i int, cfg *Config) {
		cfg.Storage.GCEvery, cfg.Storage.KeepUpdates, cfg.Storage.KeepLast, cfg.Storage.KeepEvery = 2, 2, 2, 0
		if i == 1 {
			cfg.Storage.GCEvery = 0 // the baseline: never collects
		}
	}
	for i := range 4 {
		c.start(i)
	}
	defer c.stopAll()
	c.waitFor(9, 0, 1, 2, 3)
	late := c.start(4)
	target := c.height(0) + 2
	c.waitFor(target, 0, 1, 2, 3, 4)
	c.agree(target, 0, 1, 2, 3, 4)
	c.running[0]() // stop both at once (no collection running while the stores are read)
	c.running[1]()
	c.stop(0)
	c.stop(1)
	ctx := context.Background()
	size := func(s *storage.Store) (n int, bytes int) {
		keys, err := s.Blockstore().AllKeysChan(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for k := range keys {
			sz, err := s.Blockstore().GetSize(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			n, bytes = n+1, bytes+sz
		}
		return n, bytes
	}
	n0, b0 := size(c.stores[0])
	n1, b1 := size(c.stores[1])
	h0, h1 := c.height(0), c.height(1)
	t.Logf("figure: store after %d heights: %d blocks, %d KB collecting (keep_updates 2, keep_last 2) vs %d blocks, %d KB never collecting (%d heights) = %.2f×",
		h0, n0, b0/1000, n1, b1/1000, h1, float64(b0)/float64(b1))
	if !(b0 < b1) {
		t.Fatalf("collecting: %d bytes at %d; never: %d bytes at %d", b0, h0, b1, h1)
	}
	c.mu.Lock()
	commits := c.commits[0]
	c.mu.Unlock()
	var pruned, whole []uint64
	for h := uint64(1); h < target; h++ {
		cm, ok := commits[h]
		if !ok {
			t.Fatalf("peer 0 has no commit %d", h)
		}
		v, err := c.peers[0].CommitAt(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range v.Updates {
			if u.Author == "" {
				t.Fatalf("height %d: update %s lost its manifest", h, u.CID)
			}
		}
		obj, err := c.stores[0].GetObject(ctx, cm.Block.Updates[0].Cid)
		if err != nil {
			t.Fatal(err)
		}
		content, _ := storage.Links(obj)
		has, _ := c.stores[0].Has(ctx, content[0])
		if has {
			whole = append(whole, h)
		} else {
			pruned = append(pruned, h)
		}
	}
	t.Logf("update tensors pruned at heights %v, whole at %v", pruned, whole)
	if len(pruned) == 0 || len(whole) == 0 || pruned[len(pruned)-1] > whole[0] {
		t.Fatalf("want old heights pruned and recent ones whole: pruned %v, whole %v", pruned, whole)
	}
	if st := late.Status(); st.Height < target {
		t.Fatalf("the late peer is at %d", st.Height)
	}
}

// BenchmarkCatchUp: a trainer-only peer joins a network that has committed
// three heights; the time until it holds the head (commits fetched and
// checked, the head model fetched by CID) against the size of that model.
func BenchmarkCatchUp(b *testing.B) {
	for _, arch := range []string{learner.Arch2NN, learner.ArchCNN} {
		b.Run(arch, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				c := newCluster(b, 4, 1, func(g *Genesis) { g.Model.Arch = arch; g.Train.Steps = 2 })
				for i := range 4 {
					c.start(i)
				}
				c.waitFor(3, 0, 1, 2, 3)
				b.StartTimer()
				late := c.start(4)
				head := c.height(0)
				c.waitFor(head, 4)
				for {
					st := late.Status()
					hc, err := cid.Decode(st.HeadCID)
					if err != nil {
						b.Fatal(err)
					}
					if _, _, err := late.Store().GetCheckpoint(context.Background(), hc); err == nil && st.Height >= head {
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
				b.StopTimer()
				a, _ := learner.ArchByName(arch)
				b.ReportMetric(float64(4*a.NumParams())/1000, "model-KB")
				b.ReportMetric(float64(head), "heights")
				c.stopAll()
			}
		})
	}
}

// brokenNet fails as the shell starts listening.
type brokenNet struct{ node.Network }

var errBroken = errors.New("the updates topic is gone")

func (brokenNet) Announcements(context.Context) (<-chan node.Announced, error) { return nil, errBroken }

// A shell that stops with an error stops the peer's helpers too: Run
// returns the error (it used to wait for them forever).
func TestRunReturnsShellError(t *testing.T) {
	c := newCluster(t, 1, 0, nil)
	cfg := DefaultConfig()
	p, err := New(context.Background(), c.homes[0], cfg, c.gen, WithHost(c.hosts[0]), WithStore(c.stores[0]),
		WithData(c.data[0], c.test), WithLogger(testLogger(t)),
		WithNetworkWrapper(func(n node.Network) node.Network { return brokenNet{n} }))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, errBroken) {
			t.Fatalf("Run returned %v, want the shell's error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after the shell stopped with an error")
	}
}
