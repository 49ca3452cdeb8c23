package consensus

import (
	"crypto/sha256"
	"errors"
	"fmt"
)

// Errors.
var (
	// ErrInvalid reports a message that is malformed, wrongly signed or from
	// a non-validator.
	ErrInvalid = errors.New("consensus: invalid message")
	// ErrConfig reports an unusable configuration.
	ErrConfig = errors.New("consensus: config")
	// ErrDoubleSign is the broken invariant the write-ahead log exists to
	// prevent: it is returned by Restore when the log itself holds two
	// different signatures for one height, round and step.
	ErrDoubleSign = errors.New("consensus: double sign")
)

// Hash identifies a value; the zero Hash is the nil vote.
type Hash [32]byte

// HashOf is the SHA-256 of a value.
func HashOf(value []byte) Hash { return sha256.Sum256(value) }

// IsNil reports the nil vote.
func (h Hash) IsNil() bool { return h == Hash{} }

// String shows the first bytes of a hash (or "nil").
func (h Hash) String() string {
	if h.IsNil() {
		return "nil"
	}
	return fmt.Sprintf("%x", h[:6])
}

// StepType is the phase of a round.
type StepType uint8

const (
	StepPropose   StepType = 1
	StepPrevote   StepType = 2
	StepPrecommit StepType = 3
)

func (s StepType) String() string {
	switch s {
	case StepPropose:
		return "propose"
	case StepPrevote:
		return "prevote"
	case StepPrecommit:
		return "precommit"
	}
	return fmt.Sprintf("step(%d)", uint8(s))
}

// Proposal is the proposer's value for (Height, Round). ValidRound is the
// round of the proof of lock it carries, or -1.
type Proposal struct {
	Height     uint64
	Round      int32
	ValidRound int32
	Value      []byte
	Proposer   string
	Signature  []byte
}

// Vote is a prevote or precommit for a value hash (zero: nil).
type Vote struct {
	Type      StepType // StepPrevote or StepPrecommit
	Height    uint64
	Round     int32
	Value     Hash
	Validator string
	Signature []byte
}

// Commit is a decided value with its certificate: what a machine that is
// behind accepts to catch up.
type Commit struct {
	Value       []byte
	Certificate Certificate
}

// Message is what validators exchange: *Proposal, *Vote or *Commit.
type Message interface{ isMessage() }

func (*Proposal) isMessage() {}
func (*Vote) isMessage()     {}
func (*Commit) isMessage()   {}

// Signer signs with a validator's key.
type Signer interface {
	ID() string
	Sign(msg []byte) ([]byte, error)
}

// Verifier checks a validator's signature.
type Verifier interface {
	Verify(validator string, msg, sig []byte) bool
}

// signDomain separates consensus signatures from every other use of a peer
// key (DESIGN.md §2: a domain tag, the network name and the height).
const signDomain = "murmur/consensus/v1\x00"

func signBytes(network string, step StepType, height uint64, round, validRound int32, value Hash) []byte {
	b := make([]byte, 0, len(signDomain)+len(network)+1+1+8+4+4+32)
	b = append(b, signDomain...)
	b = append(b, byte(len(network)))
	b = append(b, network...)
	b = append(b, byte(step))
	b = appendU64(b, height)
	b = appendU32(b, uint32(round))
	b = appendU32(b, uint32(validRound))
	return append(b, value[:]...)
}

// SignBytes is what a vote's signature covers.
func (v *Vote) SignBytes(network string) []byte {
	return signBytes(network, v.Type, v.Height, v.Round, -1, v.Value)
}

// SignBytes is what a proposal's signature covers (the value by its hash).
func (p *Proposal) SignBytes(network string) []byte {
	return signBytes(network, StepPropose, p.Height, p.Round, p.ValidRound, HashOf(p.Value))
}

func appendU64(b []byte, v uint64) []byte {
	return append(b, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func appendU32(b []byte, v uint32) []byte {
	return append(b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}
