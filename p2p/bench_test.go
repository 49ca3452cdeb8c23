package p2p

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/boxo/bitswap"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/murmur-ml/murmur/storage"
)

// BenchmarkAnnounce50 measures announcement delivery over 50 in-process
// hosts (gossipsub over mocknet, each host linked to 10 random others):
// the latency from publish to arrival at every other host, p50 and p99.
func BenchmarkAnnounce50(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const n = 50
	mn, hosts := mockHosts(b, n)
	rng := mrand.New(mrand.NewPCG(1, 1))
	for i := range hosts {
		for _, j := range rng.Perm(n)[:10] {
			if j != i {
				if _, err := mn.ConnectPeers(hosts[i].ID(), hosts[j].ID()); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	var height atomic.Uint64 // one announcement per height, so no author repeats one
	gossips := make([]*Gossip, n)
	arrivals := make(chan time.Time, n*1024)
	for i, h := range hosts {
		g, err := NewGossip(ctx, h, "bench", map[string]Validator{TopicUpdates: &AnnouncementPolicy{Network: "bench", Height: height.Load}})
		if err != nil {
			b.Fatal(err)
		}
		gossips[i] = g
		sub, _ := g.Subscribe(TopicUpdates)
		go func() {
			for {
				if _, err := sub.Next(ctx); err != nil {
					return
				}
				arrivals <- time.Now()
			}
		}()
	}
	eventually(b, 30*time.Second, func() bool {
		for _, g := range gossips {
			if len(g.Peers(TopicUpdates)) < 4 {
				return false
			}
		}
		return true
	})
	keys := make([]crypto.PrivKey, n)
	for i, h := range hosts {
		keys[i] = h.Peerstore().PrivKey(h.ID())
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		from := i % n
		height.Store(uint64(i + 1))
		msg := announcement(b, keys[from], "bench", height.Load(), i)
		start := time.Now()
		if err := gossips[from].Publish(ctx, TopicUpdates, msg); err != nil {
			b.Fatal(err)
		}
		for range n { // the publisher's own subscription counts too
			select {
			case at := <-arrivals:
				lat = append(lat, at.Sub(start))
			case <-time.After(10 * time.Second):
				b.Fatalf("announcement %d reached only %d hosts", i, len(lat)%n)
			}
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkModelFetch50 publishes a new 2NN checkpoint on one of 50
// in-process hosts and has the other 49 fetch it over bitswap at once;
// it reports the bytes each received against the model's size (the target
// is ≤ 1.3×; gossiping the model itself would cost about the mesh degree,
// 6×).
func BenchmarkModelFetch50(b *testing.B) {
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		const n = 50
		mn, hosts := mockHosts(b, n)
		if err := mn.ConnectAllButSelf(); err != nil {
			b.Fatal(err)
		}
		stores := make([]*storage.Store, n)
		swaps := make([]*bitswap.Bitswap, n)
		for j, h := range hosts {
			stores[j] = newStore()
			swaps[j] = NewBitswap(ctx, h, nil, stores[j].Blockstore())
		}
		rng := mrand.New(mrand.NewPCG(uint64(i), 2))
		params := make([]float32, 199210)
		for j := range params {
			params[j] = float32(rng.NormFloat64())
		}
		root, err := stores[0].PutCheckpoint(ctx, storage.Model{Arch: "2nn", Layers: []storage.Layer{{Name: "w", Shape: []int{len(params)}}}, Params: params}, storage.CheckpointMeta{Height: 1})
		if err != nil {
			b.Fatal(err)
		}
		var modelBytes int64
		ck, _, _ := stores[0].GetCheckpoint(ctx, root)
		for _, r := range ck.Shards {
			raw, _ := stores[0].Get(ctx, r.Link.Cid)
			modelBytes += int64(len(raw))
		}
		var wg sync.WaitGroup
		for j := 1; j < n; j++ {
			wg.Add(1)
			go func(j int) {
				defer wg.Done()
				if _, err := FetchDAG(ctx, swaps[j], stores[j].Blockstore(), root, contentLinks); err != nil {
					b.Error(err)
				}
			}(j)
		}
		wg.Wait()
		var received, dups int64
		for j := 1; j < n; j++ {
			s, _ := swaps[j].Stat()
			received += int64(s.DataReceived)
			dups += int64(s.DupDataReceived)
		}
		b.ReportMetric(float64(received)/float64(n-1)/float64(modelBytes), "received/model")
		b.ReportMetric(float64(dups)/float64(n-1)/float64(modelBytes), "duplicate/model")
		for _, s := range swaps {
			s.Close()
		}
		cancel()
		mn.Close()
	}
}

// BenchmarkBitswapVsTCP fetches a 32 MB checkpoint between two real hosts
// over TCP on loopback and copies the same bytes over a plain loopback TCP
// socket, and reports bitswap's throughput as a fraction of raw TCP's.
func BenchmarkBitswapVsTCP(b *testing.B) {
	const size = 32 << 20
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		mk := func() (host.Host, *storage.Store, *bitswap.Bitswap) {
			priv, _, _ := crypto.GenerateEd25519Key(rand.Reader)
			h, err := NewHost(priv, WithListen("/ip4/127.0.0.1/tcp/0"))
			if err != nil {
				b.Fatal(err)
			}
			s := newStore()
			return h, s, NewBitswap(ctx, h, nil, s.Blockstore())
		}
		srcHost, srcStore, srcBS := mk()
		dstHost, dstStore, dstBS := mk()
		if err := dstHost.Connect(ctx, peer.AddrInfo{ID: srcHost.ID(), Addrs: srcHost.Addrs()}); err != nil {
			b.Fatal(err)
		}
		params := make([]float32, size/4)
		rng := mrand.New(mrand.NewPCG(3, 3))
		for j := range params {
			params[j] = float32(rng.NormFloat64())
		}
		var layers []storage.Layer
		for off := 0; off < len(params); off += 1 << 20 {
			layers = append(layers, storage.Layer{Name: fmt.Sprint("w", off), Shape: []int{min(1<<20, len(params)-off)}})
		}
		root, err := srcStore.PutCheckpoint(ctx, storage.Model{Arch: "big", Layers: layers, Params: params}, storage.CheckpointMeta{})
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if _, err := FetchDAG(ctx, dstBS, dstStore.Blockstore(), root, contentLinks); err != nil {
			b.Fatal(err)
		}
		bsTime := time.Since(t0)
		tcpTime := rawTCP(b, size)
		b.ReportMetric(float64(size)/1e6/bsTime.Seconds(), "bitswap-MB/s")
		b.ReportMetric(float64(size)/1e6/tcpTime.Seconds(), "tcp-MB/s")
		b.ReportMetric(tcpTime.Seconds()/bsTime.Seconds(), "bitswap/tcp")
		srcBS.Close()
		dstBS.Close()
		srcHost.Close()
		dstHost.Close()
		cancel()
	}
}

func rawTCP(b *testing.B, size int) time.Duration {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	buf := make([]byte, size)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = c.Write(buf)
		c.Close()
	}()
	t0 := time.Now()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, c)
	c.Close()
	if n != int64(size) {
		b.Fatalf("raw TCP moved %d of %d bytes", n, size)
	}
	return time.Since(t0)
}
