package p2p

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
)

func loopbackHost(t *testing.T, opts ...HostOption) host.Host {
	t.Helper()
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHost(priv, append([]HostOption{WithListen("/ip4/127.0.0.1/tcp/0")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func dial(from, to host.Host) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return from.Connect(ctx, peer.AddrInfo{ID: to.ID(), Addrs: to.Addrs()})
}

// Real TCP hosts on loopback: a host without the network's key, or with
// the wrong one, cannot connect; a host with the key that the gater does
// not admit is refused.
func TestPrivateNetworkAndGater(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	wrong := bytes.Repeat([]byte{8}, 32)
	member := loopbackHost(t, WithPSK(key))
	friend := loopbackHost(t, WithPSK(key))
	if err := dial(friend, member); err != nil {
		t.Fatalf("two peers with the key cannot connect: %v", err)
	}
	if err := dial(loopbackHost(t, WithPSK(wrong)), member); err == nil {
		t.Fatal("a peer with the wrong key connected")
	}
	if err := dial(loopbackHost(t), member); err == nil {
		t.Fatal("a peer without the key connected")
	}
	stranger := loopbackHost(t, WithPSK(key))
	gated := loopbackHost(t, WithPSK(key), WithGater(NewAllowlist(friend.ID())))
	// The gater decides once the handshake has told it who is dialling, so
	// the dialler may briefly think it is connected: what matters is that
	// the gated host keeps no connection to it and serves it nothing.
	_ = dial(stranger, gated)
	if !eventually(t, 5*time.Second, func() bool { return len(gated.Network().ConnsToPeer(stranger.ID())) == 0 }) {
		t.Fatal("the gater let a peer outside the allowlist in")
	}
	if s, err := stranger.NewStream(context.Background(), gated.ID(), "/ipfs/id/1.0.0"); err == nil {
		s.Close()
		t.Fatal("a gated-out peer opened a stream")
	}
	if err := dial(friend, gated); err != nil {
		t.Fatalf("the gater refused an admitted peer: %v", err)
	}
	if _, err := NewHost(nil, WithPSK([]byte("short"))); err == nil {
		t.Fatal("a short pre-shared key was accepted")
	}
}

func TestIdentityKeyPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "identity.key")
	a, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreateKey(path)
	if err != nil || !a.Equals(b) {
		t.Fatalf("reloaded key differs: %v", err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", st.Mode().Perm())
	}
	_ = os.WriteFile(path, []byte("garbage"), 0o600)
	if _, err := LoadOrCreateKey(path); err == nil {
		t.Fatal("a corrupt key file was accepted")
	}
}

func FuzzUnmarshalAnnouncement(f *testing.F) {
	priv, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	f.Add(announcement(f, priv, "net", 3, 1))
	f.Add(intent(f, priv, "net", 3, 0))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0})
	p := &AnnouncementPolicy{Network: "net", Height: func() uint64 { return 3 }}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := UnmarshalAnnouncement(b)
		verdict := p.Validate(context.Background(), "", b)
		if err != nil {
			if verdict != Reject {
				t.Fatalf("undecodable announcement got %v", verdict)
			}
			return
		}
		if !bytes.Equal(a.Marshal(), b) {
			t.Fatal("announcement does not re-encode to its bytes")
		}
	})
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	bw := metrics.NewBandwidthCounter()
	a := loopbackHost(t, WithBandwidth(bw))
	b := loopbackHost(t)
	if err := m.WatchHost(reg, a, bw); err != nil {
		t.Fatal(err)
	}
	if err := dial(b, a); err != nil {
		t.Fatal(err)
	}
	m.message(TopicUpdates, Reject, 100)
	get := func(name string) float64 {
		fams, _ := reg.Gather()
		for _, f := range fams {
			if f.GetName() == name {
				var s float64
				for _, x := range f.GetMetric() {
					s += x.GetGauge().GetValue() + x.GetCounter().GetValue()
				}
				return s
			}
		}
		return -1
	}
	if !eventually(t, 5*time.Second, func() bool { return get("murmur_p2p_peers") == 1 && get("murmur_p2p_bytes_in_total") > 0 }) {
		t.Fatalf("peers %v, bytes in %v", get("murmur_p2p_peers"), get("murmur_p2p_bytes_in_total"))
	}
	if get("murmur_p2p_gossip_messages_total") != 1 {
		t.Fatal("rejected message not counted")
	}
}
