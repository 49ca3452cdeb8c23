package p2p

import (
	"context"
	"fmt"

	"github.com/ipfs/go-cid"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"
	libnet "github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
	dutil "github.com/libp2p/go-libp2p/p2p/discovery/util"
)

// ProtocolPrefix keeps a network's DHT apart from the public IPFS DHT and
// from other murmur networks.
func ProtocolPrefix(network string) protocol.ID { return protocol.ID("/murmur/" + network) }

// Namespace is what peers of a network advertise and look up.
func Namespace(network string) string { return "murmur/" + network }

// Discovery finds the peers of a network through its own kad-dht.
type Discovery struct {
	DHT       *dht.IpfsDHT
	rd        *drouting.RoutingDiscovery
	network   string
	h         host.Host
	bootstrap []peer.AddrInfo
}

// NewDiscovery starts a DHT server on h under the network's protocol
// prefix and dials the bootstrap peers. Peers of a network start in any
// order, so an unreachable bootstrap peer is not an error: Reconnect dials
// the missing ones again later.
func NewDiscovery(ctx context.Context, h host.Host, network string, bootstrap []peer.AddrInfo) (*Discovery, error) {
	d, err := dht.New(h,
		dht.Mode(dht.ModeServer),
		dht.ProtocolPrefix(ProtocolPrefix(network)),
		dht.BootstrapPeers(bootstrap...),
	)
	if err != nil {
		return nil, fmt.Errorf("p2p: dht: %w", err)
	}
	disc := &Discovery{DHT: d, rd: drouting.NewRoutingDiscovery(d), network: network, h: h, bootstrap: bootstrap}
	disc.Reconnect(ctx)
	if err := d.Bootstrap(ctx); err != nil {
		return nil, err
	}
	return disc, nil
}

// Reconnect dials the bootstrap peers this host is not connected to and
// returns how many it is connected to afterwards.
func (d *Discovery) Reconnect(ctx context.Context) int {
	n := 0
	for _, b := range d.bootstrap {
		if b.ID == d.h.ID() {
			continue
		}
		if d.h.Network().Connectedness(b.ID) == libnet.Connected || d.h.Connect(ctx, b) == nil {
			n++
		}
	}
	return n
}

// Advertise announces this peer under the network's namespace and keeps
// re-announcing until ctx ends (call it once).
func (d *Discovery) Advertise(ctx context.Context) { dutil.Advertise(ctx, d.rd, Namespace(d.network)) }

// FindPeers returns the peers advertising the network.
func (d *Discovery) FindPeers(ctx context.Context) ([]peer.AddrInfo, error) {
	ch, err := d.rd.FindPeers(ctx, Namespace(d.network))
	if err != nil {
		return nil, err
	}
	var out []peer.AddrInfo
	for p := range ch {
		out = append(out, p)
	}
	return out, nil
}

// Close stops the DHT.
func (d *Discovery) Close() error { return d.DHT.Close() }

// StartMDNS lets peers of one network on one LAN find and connect to each
// other with no configuration.
func StartMDNS(h host.Host, network string) (mdns.Service, error) {
	s := mdns.NewMdnsService(h, Namespace(network), mdnsNotifee{h})
	return s, s.Start()
}

type mdnsNotifee struct{ h host.Host }

func (n mdnsNotifee) HandlePeerFound(p peer.AddrInfo) {
	if p.ID != n.h.ID() {
		_ = n.h.Connect(context.Background(), p) // best effort: a LAN peer that left
	}
}

// Provide announces in the network's DHT that this peer serves c (a
// committed checkpoint), so peers that are not connected to it can find it.
func (d *Discovery) Provide(ctx context.Context, c cid.Cid) error { return d.DHT.Provide(ctx, c, true) }
