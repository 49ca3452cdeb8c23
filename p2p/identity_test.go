package p2p

import (
	"crypto/rand"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// countingVerifier counts real verifications under the cache.
type countingVerifier struct{ n int }

func (c *countingVerifier) Verify(id string, msg, sig []byte) bool {
	c.n++
	return PeerVerifier{}.Verify(id, msg, sig)
}

func TestCachedVerifier(t *testing.T) {
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewKeySigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	inner := &countingVerifier{}
	v := NewCachedVerifier(2)
	v.inner = inner
	sign := func(m string) []byte {
		sig, err := s.Sign([]byte(m))
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	a, b, c := sign("a"), sign("b"), sign("c")
	tests := []struct {
		name     string
		msg      string
		sig      []byte
		want     bool
		verified int // real verifications so far
	}{
		{"first sight verifies", "a", a, true, 1},
		{"second sight is remembered", "a", a, true, 1},
		{"a bad signature is refused", "a", b, false, 2},
		{"and never remembered", "a", b, false, 3},
		{"another message", "b", b, true, 4},
		{"a third evicts the oldest", "c", c, true, 5},
		{"which verifies again", "a", a, true, 6},
		{"the newest is still there", "c", c, true, 6},
	}
	for _, tc := range tests {
		if got := v.Verify(s.ID(), []byte(tc.msg), tc.sig); got != tc.want || inner.n != tc.verified {
			t.Fatalf("%s: %v after %d verifications, want %v after %d", tc.name, got, inner.n, tc.want, tc.verified)
		}
	}
	if len(v.seen) > 2 {
		t.Fatalf("cache holds %d entries, bound 2", len(v.seen))
	}
}
