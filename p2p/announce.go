package p2p

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// ErrAnnouncement reports a malformed or wrongly signed announcement.
var ErrAnnouncement = errors.New("p2p: bad announcement")

// Announcement is what a trainer gossips on the updates topic (DESIGN.md
// §1.4): which update it stored for which height, signed with its peer key.
//
// An announcement without an update (Update undefined, Samples 0) is an
// intent: the author is about to train for Height. A trainer that is not
// yet counted as active (it just joined, restarted or caught up) sends one
// so proposers wait for its first update instead of proposing without it.
type Announcement struct {
	Network   string
	Height    uint64
	Author    peer.ID
	Update    cid.Cid
	Samples   uint64
	Signature []byte
}

const announceDomain = "murmur/announce/v1\x00"

// Limits of the announcement codec.
const (
	maxNetworkLen = 255
	maxCIDLen     = 128
	maxSigLen     = 256
	maxPeerIDLen  = 128
)

func (a *Announcement) body() []byte {
	b := []byte{1} // format version
	b = appendField(b, []byte(a.Network))
	b = binary.AppendUvarint(b, a.Height)
	b = appendField(b, []byte(a.Author))
	b = appendField(b, a.Update.Bytes())
	return binary.AppendUvarint(b, a.Samples)
}

// IsIntent reports whether the announcement is an intent to train rather
// than an update.
func (a *Announcement) IsIntent() bool { return !a.Update.Defined() }

// SignBytes is what the signature covers: a domain tag, then the body
// (network name and height included).
func (a *Announcement) SignBytes() []byte { return append([]byte(announceDomain), a.body()...) }

// Marshal encodes the announcement with its signature.
func (a *Announcement) Marshal() []byte { return appendField(a.body(), a.Signature) }

// Sign fills in Author and Signature from the peer key.
func (a *Announcement) Sign(priv crypto.PrivKey) error {
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return err
	}
	a.Author = id
	a.Signature, err = priv.Sign(a.SignBytes())
	return err
}

// Verify checks the signature against the key inside the author's peer ID.
func (a *Announcement) Verify() error {
	if !(PeerVerifier{}).Verify(a.Author.String(), a.SignBytes(), a.Signature) {
		return fmt.Errorf("%w: signature of %s does not verify", ErrAnnouncement, a.Author)
	}
	return nil
}

func appendField(b, f []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(f)))
	return append(b, f...)
}

// UnmarshalAnnouncement decodes an announcement, bounding every field by
// fixed limits and by what is left of the input; it never panics.
func UnmarshalAnnouncement(b []byte) (*Announcement, error) {
	if len(b) > MaxMessageBytes || len(b) == 0 || b[0] != 1 {
		return nil, fmt.Errorf("%w: %d bytes, version %v", ErrAnnouncement, len(b), b[:min(1, len(b))])
	}
	r := reader{b: b[1:]}
	a := &Announcement{}
	a.Network = string(r.field(maxNetworkLen))
	a.Height = r.uvarint()
	author := r.field(maxPeerIDLen)
	update := r.field(maxCIDLen)
	a.Samples = r.uvarint()
	a.Signature = r.field(maxSigLen)
	if r.err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAnnouncement, r.err)
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrAnnouncement, len(r.b))
	}
	var err error
	if a.Author, err = peer.IDFromBytes(author); err != nil {
		return nil, fmt.Errorf("%w: author: %w", ErrAnnouncement, err)
	}
	if len(update) == 0 {
		// An intent (cid.Undef encodes as no bytes) claims no samples.
		if a.Samples != 0 {
			return nil, fmt.Errorf("%w: an intent to train claims %d samples", ErrAnnouncement, a.Samples)
		}
		return a, nil
	}
	if a.Update, err = cid.Cast(update); err != nil {
		return nil, fmt.Errorf("%w: update CID: %w", ErrAnnouncement, err)
	}
	return a, nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 || n != len(binary.AppendUvarint(nil, v)) {
		r.err = errors.New("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) field(limit int) []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(limit) || n > uint64(len(r.b)) {
		r.err = fmt.Errorf("field of %d bytes (limit %d, %d left)", n, limit, len(r.b))
		return nil
	}
	f := append([]byte(nil), r.b[:n]...)
	r.b = r.b[n:]
	return f
}

// AnnouncementPolicy is the updates topic's validator: decode, check the
// network, the signature and the author's admission, Ignore heights that are
// not checkable yet (more than one ahead) or already past, and Reject a
// second, different announcement by one author for one height (an intent
// conflicts with nothing: it names no update).
type AnnouncementPolicy struct {
	Network string
	Admit   func(peer.ID) bool // nil admits every author
	Height  func() uint64      // the height being trained
	// Verifier checks the author's signature (nil: PeerVerifier; a
	// CachedVerifier makes re-sent announcements cheap).
	Verifier SignatureVerifier

	mu   sync.Mutex
	seen map[authorHeight]cid.Cid // bounded: pruned below the current height
}

type authorHeight struct {
	author peer.ID
	height uint64
}

// Validate implements Validator.
func (p *AnnouncementPolicy) Validate(_ context.Context, _ peer.ID, data []byte) Verdict {
	a, err := UnmarshalAnnouncement(data)
	if err != nil || a.Network != p.Network || (p.Admit != nil && !p.Admit(a.Author)) {
		return Reject
	}
	ver := p.Verifier
	if ver == nil {
		ver = PeerVerifier{}
	}
	if !ver.Verify(a.Author.String(), a.SignBytes(), a.Signature) {
		return Reject
	}
	h := p.Height()
	if a.Height > h+1 || a.Height+1 < h {
		return Ignore
	}
	if a.IsIntent() {
		return Accept
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen == nil {
		p.seen = map[authorHeight]cid.Cid{}
	}
	for k := range p.seen {
		if k.height+1 < h {
			delete(p.seen, k)
		}
	}
	k := authorHeight{a.Author, a.Height}
	if old, ok := p.seen[k]; ok && !old.Equals(a.Update) {
		return Reject // equivocation: two updates from one author for one height
	}
	p.seen[k] = a.Update
	return Accept
}
