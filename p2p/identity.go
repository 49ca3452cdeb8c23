package p2p

import (
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
