package ledger

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/murmur-ml/murmur/consensus"
)

type keys map[string]ed25519.PrivateKey

func (k keys) Verify(id string, msg, sig []byte) bool {
	p, ok := k[id]
	return ok && ed25519.Verify(p.Public().(ed25519.PublicKey), msg, sig)
}

// commit forges a valid commit signed by 3 of the 4 validators.
func commit(k keys, h uint64, value string) consensus.Commit {
	c := consensus.Commit{Value: []byte(value), Certificate: consensus.Certificate{Height: h, Value: consensus.HashOf([]byte(value))}}
	for _, id := range []string{"a", "b", "c"} {
		v := consensus.Vote{Type: consensus.StepPrecommit, Height: h, Value: c.Certificate.Value, Validator: id}
		v.Signature = ed25519.Sign(k[id], v.SignBytes("net"))
		c.Certificate.Precommits = append(c.Certificate.Precommits, v)
	}
	return c
}

func setup(t *testing.T) (keys, *consensus.ValidatorSet) {
	k := keys{}
	var vals []consensus.Validator
	for _, id := range []string{"a", "b", "c", "d"} {
		s := sha256.Sum256([]byte(id))
		k[id] = ed25519.NewKeyFromSeed(s[:])
		vals = append(vals, consensus.Validator{ID: id, Power: 1})
	}
	vs, err := consensus.NewValidatorSet(vals)
	if err != nil {
		t.Fatal(err)
	}
	return k, vs
}

func TestLedgerChainsAndVerifies(t *testing.T) {
	k, vs := setup(t)
	path := filepath.Join(t.TempDir(), "ledger")
	l, err := Open(path, "net", vs, k)
	if err != nil {
		t.Fatal(err)
	}
	for h := uint64(1); h <= 5; h++ {
		if err := l.Append(commit(k, h, fmt.Sprint("block ", h))); err != nil {
			t.Fatal(err)
		}
	}
	head := l.Head()
	if err := l.Append(commit(k, 7, "gap")); !errors.Is(err, ErrChain) {
		t.Fatalf("a gap was accepted: %v", err)
	}
	bad := commit(k, 6, "x")
	bad.Certificate.Precommits = bad.Certificate.Precommits[:2] // 2 of 4: no quorum
	if err := l.Append(bad); !errors.Is(err, ErrChain) {
		t.Fatalf("a certificate without quorum was accepted: %v", err)
	}
	l.Close()
	l, err = Open(path, "net", vs, k)
	if err != nil || l.Height() != 5 || l.Head() != head {
		t.Fatalf("reopened: height %d, %v", l.Height(), err)
	}
	l.Close()
	// A different network's verifier refuses the chain (signatures cover the name).
	if _, err := Open(path, "other", vs, k); err == nil {
		t.Fatal("a ledger opened under another network name")
	}
	// Tampering with a committed value is found on open.
	b, _ := os.ReadFile(path)
	b[len(b)/3] ^= 1
	_ = os.WriteFile(path, b, 0o600)
	if _, err := Open(path, "net", vs, k); err == nil {
		t.Fatal("a tampered ledger opened")
	}
}
