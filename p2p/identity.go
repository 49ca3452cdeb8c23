package p2p

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// KeySigner signs with a peer's libp2p key as that peer (it satisfies the
// Signer interfaces of consensus and storage: identities are libp2p keys,
// DESIGN.md §2).
type KeySigner struct {
	Key crypto.PrivKey
	id  peer.ID
}

// NewKeySigner derives the peer ID of key.
func NewKeySigner(key crypto.PrivKey) (*KeySigner, error) {
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &KeySigner{Key: key, id: id}, nil
}

// ID is the peer ID the signatures are made as.
func (s *KeySigner) ID() string { return s.id.String() }

// Sign signs msg.
func (s *KeySigner) Sign(msg []byte) ([]byte, error) { return s.Key.Sign(msg) }

// PeerVerifier checks a signature against the public key inside a peer ID
// (ed25519 IDs embed their key), with no key registry.
type PeerVerifier struct{}

// Verify reports whether sig is id's signature of msg.
func (PeerVerifier) Verify(id string, msg, sig []byte) bool {
	p, err := peer.Decode(id)
	if err != nil {
		return false
	}
	pub, err := p.ExtractPublicKey()
	if err != nil {
		return false
	}
	ok, err := pub.Verify(msg, sig)
	return err == nil && ok
}

// SignatureVerifier checks that sig is peer id's signature of msg
// (PeerVerifier, CachedVerifier).
type SignatureVerifier interface {
	Verify(id string, msg, sig []byte) bool
}

// CachedVerifier remembers the signatures it has found valid (a bounded
// set, oldest forgotten first), so a message checked by the gossip
// validator and again by the consensus machine, or a commit republished
// on the heads topic every few ticks, costs one ed25519 verification.
// Only successes are kept: a verdict of valid cannot change, and an
// attacker cannot fill the set without valid signatures. Safe for
// concurrent use.
type CachedVerifier struct {
	inner SignatureVerifier
	mu    sync.Mutex
	seen  map[[32]byte]struct{}
	ring  [][32]byte
	next  int
}

// NewCachedVerifier wraps PeerVerifier with a set of up to size entries.
func NewCachedVerifier(size int) *CachedVerifier {
	return &CachedVerifier{inner: PeerVerifier{}, seen: make(map[[32]byte]struct{}, size), ring: make([][32]byte, size)}
}

// Verify implements the consensus and storage verifiers.
func (c *CachedVerifier) Verify(id string, msg, sig []byte) bool {
	h := sha256.New()
	for _, part := range [][]byte{[]byte(id), msg, sig} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		h.Write(n[:])
		h.Write(part)
	}
	var k [32]byte
	h.Sum(k[:0])
	c.mu.Lock()
	_, ok := c.seen[k]
	c.mu.Unlock()
	if ok {
		return true
	}
	if !c.inner.Verify(id, msg, sig) {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[k]; !ok && len(c.ring) > 0 {
		delete(c.seen, c.ring[c.next])
		c.ring[c.next] = k
		c.seen[k] = struct{}{}
		c.next = (c.next + 1) % len(c.ring)
	}
	return true
}
