package p2p

import (
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
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
	mh "github.com/multiformats/go-multihash"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/murmur-ml/murmur/storage"
)

// eventually polls cond until it holds or the deadline passes: distributed
// protocols converge in their own time, and the test waits for the event,
// not for a fixed sleep.
func eventually(t testing.TB, within time.Duration, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(within)
	for wait := time.Millisecond; time.Now().Before(deadline); wait = min(2*wait, 200*time.Millisecond) {
		if cond() {
			return true
		}
		time.Sleep(wait)
	}
	return cond()
}

func mockHosts(t testing.TB, n int) (mocknet.Mocknet, []host.Host) {
	t.Helper()
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	hosts := make([]host.Host, n)
	for i := range hosts {
		// ed25519 identities, as murmur peers have (announcement signatures
		// are checked against the key inside the peer ID); in-memory links,
		// loopback-looking addresses that carry no packets.
		priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		h, err := mn.AddPeer(priv, ma.StringCast(fmt.Sprintf("/ip4/127.0.%d.%d/tcp/4001", i/250, 1+i%250)))
		if err != nil {
			t.Fatal(err)
		}
		hosts[i] = h
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	return mn, hosts
}

// Twenty hosts that know only one bootstrap peer all find each other
// through the network's own DHT.
func TestDHTDiscovery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, hosts := mockHosts(t, 20)
	boot := peer.AddrInfo{ID: hosts[0].ID(), Addrs: hosts[0].Addrs()}
	discs := make([]*Discovery, len(hosts))
	for i, h := range hosts {
		d, err := NewDiscovery(ctx, h, "test", []peer.AddrInfo{boot})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		discs[i] = d
	}
	for _, d := range discs {
		d.Advertise(ctx)
	}
	for i, d := range discs {
		found := map[peer.ID]bool{}
		ok := eventually(t, time.Minute, func() bool {
			ps, err := d.FindPeers(ctx)
			if err != nil {
				return false
			}
			for _, p := range ps {
				if p.ID != hosts[i].ID() {
					found[p.ID] = true
				}
			}
			return len(found) == len(hosts)-1
		})
		if !ok {
			t.Fatalf("host %d found %d of %d peers", i, len(found), len(hosts)-1)
		}
	}
	// A committed checkpoint provided in the DHT by one host is found and
	// fetched by a host that is not connected to it.
	src, dst := 7, 13
	for _, c := range hosts[dst].Network().ConnsToPeer(hosts[src].ID()) {
		c.Close()
	}
	srcStore, dstStore := newStore(), newStore()
	root, err := srcStore.PutCheckpoint(ctx, storage.Model{Arch: "t", Layers: []storage.Layer{{Name: "w", Shape: []int{1000}}}, Params: make([]float32, 1000)}, storage.CheckpointMeta{Height: 2})
	if err != nil {
		t.Fatal(err)
	}
	srcBS := NewBitswap(ctx, hosts[src], discs[src].DHT, srcStore.Blockstore())
	defer srcBS.Close()
	dstBS := NewBitswap(ctx, hosts[dst], discs[dst].DHT, dstStore.Blockstore())
	defer dstBS.Close()
	if err := discs[src].Provide(ctx, root); err != nil {
		t.Fatal(err)
	}
	if _, err := FetchDAG(ctx, dstBS, dstStore.Blockstore(), root, contentLinks); err != nil {
		t.Fatalf("fetch through the DHT: %v", err)
	}
	if _, _, err := dstStore.GetCheckpoint(ctx, root); err != nil {
		t.Fatal(err)
	}
	// The DHT speaks only the network's protocol, not the public IPFS one.
	for _, p := range hosts[1].Mux().Protocols() {
		if string(p) == "/ipfs/kad/1.0.0" {
			t.Fatal("the public IPFS DHT protocol is served")
		}
	}
}

func announcement(t testing.TB, priv crypto.PrivKey, network string, height uint64, seq int) []byte {
	h, _ := mh.Sum([]byte(fmt.Sprint(network, height, seq)), mh.SHA2_256, -1)
	a := &Announcement{Network: network, Height: height, Update: cid.NewCidV1(cid.DagCBOR, h), Samples: 100}
	if err := a.Sign(priv); err != nil {
		t.Fatal(err)
	}
	return a.Marshal()
}

// intent is a signed intent to train (no update); samples ≠ 0 makes it
// malformed.
func intent(t testing.TB, priv crypto.PrivKey, network string, height, samples uint64) []byte {
	a := &Announcement{Network: network, Height: height, Samples: samples}
	if err := a.Sign(priv); err != nil {
		t.Fatal(err)
	}
	return a.Marshal()
}

// Announcements reach every subscribed host; a host sending garbage is
// graylisted by the others while honest delivery stays ≥ 99%.
func TestGossipDeliveryAndGraylist(t *testing.T) {
	// No deadline of its own: a deadline that expired mid-test stopped the
	// score inspector and froze the scores the last check reads (CI, 2
	// loaded cores, 151 s). go test's -timeout bounds a hung run.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const n = 10
	mn, hosts := mockHosts(t, n)
	if err := mn.ConnectAllButSelf(); err != nil {
		t.Fatal(err)
	}
	attacker := n - 1
	bad := hosts[attacker].ID()
	// The attacker's lowest score as each honest host saw it: once it sinks
	// below the graylist threshold its garbage is dropped unvalidated, so
	// the counter stops growing and decays (over about a minute) until the
	// next piece of garbage pushes it down again. The lowest score, not
	// the last, is what says the attacker was graylisted.
	var mu sync.Mutex
	lowest := map[int]float64{}
	var current atomic.Uint64 // the height being trained: one announcement per author and height
	gossips := make([]*Gossip, n)
	for i, h := range hosts {
		validators := map[string]Validator{TopicUpdates: &AnnouncementPolicy{Network: "test", Height: current.Load}}
		var opts []GossipOption
		if i == attacker {
			validators = nil // it publishes whatever it likes
		} else {
			opts = append(opts, WithScoreInspector(func(m map[peer.ID]float64) {
				s, ok := m[bad]
				if !ok {
					return
				}
				mu.Lock()
				if low, seen := lowest[i]; !seen || s < low {
					lowest[i] = s
				}
				mu.Unlock()
			}, 100*time.Millisecond))
		}
		g, err := NewGossip(ctx, h, "test", validators, opts...)
		if err != nil {
			t.Fatal(err)
		}
		gossips[i] = g
	}
	subs := make([]chan []byte, n)
	for i, g := range gossips {
		sub, err := g.Subscribe(TopicUpdates)
		if err != nil {
			t.Fatal(err)
		}
		subs[i] = make(chan []byte, 4096)
		go func(i int) {
			for {
				m, err := sub.Next(ctx)
				if err != nil {
					return
				}
				subs[i] <- m.Data
			}
		}(i)
	}
	if !eventually(t, 30*time.Second, func() bool {
		for _, g := range gossips {
			if len(g.Peers(TopicUpdates)) < 3 {
				return false
			}
		}
		return true
	}) {
		t.Fatal("the mesh did not form")
	}
	privs := make([]crypto.PrivKey, n)
	for i, h := range hosts {
		privs[i] = h.Peerstore().PrivKey(h.ID())
	}
	const honestMsgs = 100
	// Round by round, as trainers announce: every author once per height,
	// the next height only once this one has spread (receivers Ignore
	// heights they cannot check yet).
	received := make([]int, n)
	drain := func(want int) bool {
		done := true
		for i := range n - 1 {
			for len(subs[i]) > 0 {
				if _, err := UnmarshalAnnouncement(<-subs[i]); err != nil {
					t.Fatalf("host %d received an invalid message", i)
				}
				received[i]++
			}
			done = done && received[i] >= want
		}
		return done
	}
	for k := 0; k < honestMsgs; {
		current.Store(uint64(k/(n-1) + 1))
		for from := 0; from < n-1 && k < honestMsgs; from, k = from+1, k+1 {
			if err := gossips[from].Publish(ctx, TopicUpdates, announcement(t, privs[from], "test", current.Load(), k)); err != nil {
				t.Fatal(err)
			}
			garbage := make([]byte, 200)
			_, _ = rand.Read(garbage)
			_ = gossips[attacker].Publish(ctx, TopicUpdates, garbage)
		}
		eventually(t, 10*time.Second, func() bool { return drain(k) })
	}
	total := 0
	for i := range n - 1 {
		total += received[i]
	}
	rate := float64(total) / float64((n-1)*honestMsgs)
	var drops Drops
	for _, g := range gossips {
		d := g.Dropped()
		drops.Outbound += d.Outbound
		drops.ValidationQueue += d.ValidationQueue
		drops.Undelivered += d.Undelivered
	}
	t.Logf("honest delivery %.2f%%; gossipsub dropped unjudged: %+v", 100*rate, drops)
	if rate < 0.99 {
		t.Fatalf("honest delivery %.2f%% < 99%%", 100*rate)
	}
	if !eventually(t, 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for i := range n - 1 {
			if s, ok := lowest[i]; !ok || s >= GraylistThreshold {
				return false
			}
		}
		return true
	}) {
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("the attacker was not graylisted everywhere (lowest score per host, threshold %d): %v", GraylistThreshold, lowest)
	}
	mu.Lock()
	t.Logf("the attacker's lowest score per host: %v", lowest)
	mu.Unlock()
}

func TestAnnouncementPolicy(t *testing.T) {
	priv, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	other, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	otherID, _ := peer.IDFromPrivateKey(other)
	height := uint64(10)
	p := &AnnouncementPolicy{Network: "net", Height: func() uint64 { return height }, Admit: func(id peer.ID) bool { return id != otherID }}
	ctx := context.Background()
	good := announcement(t, priv, "net", 10, 1)
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-5] ^= 1
	tests := []struct {
		name string
		data []byte
		want Verdict
	}{
		{"valid", good, Accept},
		{"duplicate", good, Accept},
		{"equivocation", announcement(t, priv, "net", 10, 2), Reject},
		{"next height", announcement(t, priv, "net", 11, 1), Accept},
		{"far future", announcement(t, priv, "net", 20, 1), Ignore},
		{"old", announcement(t, priv, "net", 3, 1), Ignore},
		{"other network", announcement(t, priv, "elsewhere", 10, 3), Reject},
		{"not admitted", announcement(t, other, "net", 10, 1), Reject},
		{"bad signature", tampered, Reject},
		{"garbage", []byte{1, 2, 3}, Reject},
		{"empty", nil, Reject},
		// An intent names no update, so it conflicts with none.
		{"intent after the update", intent(t, priv, "net", 10, 0), Accept},
		{"intent for the next height", intent(t, priv, "net", 11, 0), Accept},
		{"intent repeated", intent(t, priv, "net", 11, 0), Accept},
		{"update after an intent", announcement(t, priv, "net", 11, 1), Accept},
		{"old intent", intent(t, priv, "net", 3, 0), Ignore},
		{"intent claiming samples", intent(t, priv, "net", 10, 5), Reject},
		{"intent not admitted", intent(t, other, "net", 10, 0), Reject},
	}
	for _, tc := range tests {
		if got := p.Validate(ctx, "", tc.data); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func newStore() *storage.Store { return storage.NewStore(dssync.MutexWrap(ds.NewMapDatastore()), nil) }

// A 10 MB checkpoint published by one host is fetched by ten others over
// bitswap and verifies.
func TestBitswapCheckpoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mn, hosts := mockHosts(t, 11)
	if err := mn.ConnectAllButSelf(); err != nil {
		t.Fatal(err)
	}
	stores := make([]*storage.Store, len(hosts))
	bsws := make([]interface{ Close() error }, len(hosts))
	for i := range hosts {
		stores[i] = newStore()
	}
	rng := mrand.New(mrand.NewPCG(1, 1))
	params := make([]float32, 10<<20/4)
	for i := range params {
		params[i] = float32(rng.NormFloat64())
	}
	root, err := stores[0].PutCheckpoint(ctx, storage.Model{Arch: "bench", Layers: []storage.Layer{{Name: "w", Shape: []int{len(params)}}}, Params: params}, storage.CheckpointMeta{Height: 3})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(hosts))
	swaps := make([]*bitswap.Bitswap, len(hosts))
	for i, h := range hosts {
		swaps[i] = NewBitswap(ctx, h, nil, stores[i].Blockstore())
		bsws[i] = swaps[i]
	}
	defer func() {
		for _, b := range bsws {
			b.Close()
		}
	}()
	for i := 1; i < len(hosts); i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = FetchDAG(ctx, swaps[i], stores[i].Blockstore(), root, contentLinks)
		}(i)
	}
	wg.Wait()
	for i := 1; i < len(hosts); i++ {
		if errs[i] != nil {
			t.Fatalf("host %d: %v", i, errs[i])
		}
		_, m, err := stores[i].GetCheckpoint(ctx, root)
		if err != nil || len(m.Params) != len(params) || m.Params[12345] != params[12345] {
			t.Fatalf("host %d: fetched checkpoint does not verify: %v", i, err)
		}
	}
}

func contentLinks(c cid.Cid, data []byte) ([]cid.Cid, error) {
	if c.Type() != cid.DagCBOR {
		return nil, nil
	}
	obj, err := storage.Decode(data)
	if err != nil {
		return nil, err
	}
	content, _ := storage.Links(obj)
	return content, nil
}

// TestDropsAreCounted: a local reader that never reads its subscription
// makes gossipsub drop what overflows its buffer; each drop is counted, by
// the gossip and on its metric.
func TestDropsAreCounted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, hosts := mockHosts(t, 1)
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewGossip(ctx, hosts[0], "test", nil, WithMetrics(m))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Subscribe(TopicHeads); err != nil { // never read
		t.Fatal(err)
	}
	const sent = 200
	for i := range sent {
		if err := g.Publish(ctx, TopicHeads, []byte(fmt.Sprintf("head %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	dropped := func() float64 {
		fams, _ := reg.Gather()
		for _, f := range fams {
			if f.GetName() == "murmur_p2p_gossip_dropped_total" {
				for _, x := range f.GetMetric() {
					for _, l := range x.GetLabel() {
						if l.GetName() == "reason" && l.GetValue() == "slow_subscriber" {
							return x.GetCounter().GetValue()
						}
					}
				}
			}
		}
		return 0
	}
	// Delivery runs on gossipsub's goroutine: wait until it has settled
	// and both counts agree.
	var d Drops
	if !eventually(t, 10*time.Second, func() bool {
		d = g.Dropped()
		return d.Undelivered > 0 && dropped() == float64(d.Undelivered) && g.Dropped() == d
	}) {
		t.Fatalf("after %d messages to an unread subscription: the gossip counts %+v, the metric %v", sent, g.Dropped(), dropped())
	}
	if d.Undelivered >= sent {
		t.Fatalf("%d of %d dropped: the subscription buffered nothing", d.Undelivered, sent)
	}
	t.Logf("%d of %d dropped for the unread subscription: %+v", d.Undelivered, sent, d)
}
