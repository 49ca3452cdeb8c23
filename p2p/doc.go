// Package p2p is a peer's libp2p side: the host (TCP, QUIC, Noise, TLS,
// yamux), kad-dht and mDNS discovery under /murmur/<network>, the gossipsub
// topics with their validators and peer scoring, bitswap wired to storage's
// blocks, the private-network key and the connection gater.
//
// It never imports consensus, learner or node (DESIGN.md §4).
//
// Status: specified by issue 4/6 and not written yet; nothing imports it.
package p2p
