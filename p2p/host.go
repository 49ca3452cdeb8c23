package p2p

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	noise "github.com/libp2p/go-libp2p/p2p/security/noise"
	tls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
)

// ErrKey reports an identity key file that cannot be used.
var ErrKey = errors.New("p2p: identity key")

// LoadOrCreateKey reads the ed25519 identity at path, or creates it (mode
// 0600) if the file does not exist.
func LoadOrCreateKey(path string) (crypto.PrivKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			return nil, err
		}
		raw, err := crypto.MarshalPrivateKey(priv)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, raw, 0o600); err != nil {
			return nil, err
		}
		return priv, os.Rename(tmp, path)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	priv, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKey, path, err)
	}
	if priv.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("%w: %s holds a %v key, murmur identities are ed25519", ErrKey, path, priv.Type())
	}
	return priv, nil
}

// HostOption configures NewHost.
type HostOption func(*hostOptions)

type hostOptions struct {
	listen   []string
	psk      pnet.PSK
	gater    connmgr.ConnectionGater
	nat      bool
	maxConns int
	bw       *metrics.BandwidthCounter
}

// WithBandwidth counts the host's traffic into bw (see Metrics.WatchHost).
func WithBandwidth(bw *metrics.BandwidthCounter) HostOption {
	return func(o *hostOptions) { o.bw = bw }
}

// WithListen sets the listen multiaddrs (default TCP and QUIC on all
// interfaces, ephemeral ports).
func WithListen(addrs ...string) HostOption { return func(o *hostOptions) { o.listen = addrs } }

// WithPSK makes the network private: only peers with the same 32-byte key
// can connect. libp2p's private networks work over TCP only, so QUIC is off.
func WithPSK(psk []byte) HostOption { return func(o *hostOptions) { o.psk = psk } }

// WithGater admits only the connections the gater allows.
func WithGater(g connmgr.ConnectionGater) HostOption { return func(o *hostOptions) { o.gater = g } }

// WithNATTraversal turns on AutoNAT, hole punching, port mapping and the
// relay client, for testnets behind NAT.
func WithNATTraversal() HostOption { return func(o *hostOptions) { o.nat = true } }

// WithMaxConns bounds connections in the resource manager (default 256).
func WithMaxConns(n int) HostOption { return func(o *hostOptions) { o.maxConns = n } }

// NewHost builds a real libp2p host for priv.
func NewHost(priv crypto.PrivKey, opts ...HostOption) (host.Host, error) {
	o := hostOptions{maxConns: 256}
	for _, f := range opts {
		f(&o)
	}
	if len(o.listen) == 0 {
		o.listen = []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"}
	}
	if o.psk != nil && len(o.psk) != 32 {
		return nil, fmt.Errorf("p2p: pre-shared key of %d bytes, want 32", len(o.psk))
	}
	rm, err := resourceManager(o.maxConns)
	if err != nil {
		return nil, err
	}
	lopts := []libp2p.Option{
		libp2p.Identity(priv),
		libp2p.ListenAddrStrings(o.listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(rm),
	}
	if o.psk != nil {
		lopts = append(lopts, libp2p.PrivateNetwork(o.psk))
	} else {
		lopts = append(lopts, libp2p.Transport(quic.NewTransport), libp2p.Security(tls.ID, tls.New))
	}
	if o.gater != nil {
		lopts = append(lopts, libp2p.ConnectionGater(o.gater))
	}
	if o.bw != nil {
		lopts = append(lopts, libp2p.BandwidthReporter(o.bw))
	}
	if o.nat {
		lopts = append(lopts, libp2p.NATPortMap(), libp2p.EnableHolePunching(), libp2p.EnableRelay(), libp2p.EnableAutoNATv2())
	} else {
		lopts = append(lopts, libp2p.DisableRelay())
	}
	h, err := libp2p.New(lopts...)
	if err != nil {
		return nil, fmt.Errorf("p2p: host: %w", err)
	}
	return h, nil
}

// resourceManager scales libp2p's default limits to a learning peer: many
// long-lived streams to few peers (bitswap, gossip), bounded connections.
func resourceManager(maxConns int) (network.ResourceManager, error) {
	scaling := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&scaling)
	limits := scaling.AutoScale()
	cfg := rcmgr.PartialLimitConfig{System: rcmgr.ResourceLimits{Conns: rcmgr.LimitVal(maxConns),
		ConnsInbound: rcmgr.LimitVal(maxConns), ConnsOutbound: rcmgr.LimitVal(maxConns)}}
	return rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(cfg.Build(limits)))
}

// Allowlist is a connection gater that admits only the listed peers (the
// genesis validators and trainers); an empty list admits everyone.
type Allowlist struct {
	allowed map[peer.ID]bool
}

// NewAllowlist makes a gater for the given peers.
func NewAllowlist(ids ...peer.ID) *Allowlist {
	a := &Allowlist{allowed: map[peer.ID]bool{}}
	for _, id := range ids {
		a.allowed[id] = true
	}
	return a
}

func (a *Allowlist) ok(p peer.ID) bool { return len(a.allowed) == 0 || a.allowed[p] }

// InterceptPeerDial refuses to dial peers outside the list.
func (a *Allowlist) InterceptPeerDial(p peer.ID) bool { return a.ok(p) }

// InterceptAddrDial refuses addresses of peers outside the list.
func (a *Allowlist) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return a.ok(p) }

// InterceptAccept lets the handshake run: the peer is known after it.
func (a *Allowlist) InterceptAccept(network.ConnMultiaddrs) bool { return true }

// InterceptSecured refuses a connection once the peer's identity is known.
func (a *Allowlist) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return a.ok(p)
}

// InterceptUpgraded accepts every connection that got this far.
func (a *Allowlist) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
