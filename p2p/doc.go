// Package p2p is a peer's libp2p side: the host (TCP and QUIC, Noise and
// TLS, yamux, an ed25519 identity kept in the peer's home, the resource
// manager, optional NAT traversal), discovery (kad-dht in server mode under
// /murmur/<network>, never the public IPFS DHT; mDNS on a LAN), the gossipsub
// topics of DESIGN.md with their validators and peer scoring, bitswap over
// the host wired to storage's blockstore, two request/response protocols
// (runs of committed heights for peers catching up; a whole DAG from one
// peer — an update from its author — verified block by block), a cache of
// verified signatures, an optional pre-shared key
// (private network) and a connection gater that admits only the peers the
// genesis allows, and Prometheus metrics.
//
// It never imports consensus, learner or node (DESIGN.md §4): what a gossip
// payload means to the round is decided by the Validator each topic is
// given; the announcement payload of the updates topic is defined here
// because its signature and bounds are checked at the gossip layer.
//
// How it is driven: constructors take a context only to start background
// protocol goroutines that libp2p owns; they stop when the host is closed.
// Nothing here is global: metrics go to the registry the caller passes.
package p2p
