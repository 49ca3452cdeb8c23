package consensus

import (
	"bytes"
	"fmt"
)

// Certificate is 2/3+ of voting power precommitting one value at one
// height and round: proof that the value was decided.
type Certificate struct {
	Height     uint64
	Round      int32
	Value      Hash
	Precommits []Vote
}

// Verify checks the certificate against the validator set: every vote a
// precommit for (Height, Round, Value), from a distinct validator, with a
// valid signature, and together more than two thirds of the power.
func (c *Certificate) Verify(network string, vals *ValidatorSet, ver Verifier) error {
	if c.Value.IsNil() {
		return fmt.Errorf("%w: certificate for nil", ErrInvalid)
	}
	seen := map[string]bool{}
	var power int64
	for _, v := range c.Precommits {
		if v.Type != StepPrecommit || v.Height != c.Height || v.Round != c.Round || v.Value != c.Value {
			return fmt.Errorf("%w: certificate holds a vote for something else (%s %d/%d %s)", ErrInvalid, v.Type, v.Height, v.Round, v.Value)
		}
		if seen[v.Validator] {
			return fmt.Errorf("%w: certificate counts %s twice", ErrInvalid, v.Validator)
		}
		seen[v.Validator] = true
		p := vals.Power(v.Validator)
		if p == 0 {
			return fmt.Errorf("%w: certificate signer %q is not a validator", ErrInvalid, v.Validator)
		}
		if !ver.Verify(v.Validator, v.SignBytes(network), v.Signature) {
			return fmt.Errorf("%w: bad signature of %s in certificate", ErrInvalid, v.Validator)
		}
		power += p
	}
	if !vals.Quorum(power) {
		return fmt.Errorf("%w: certificate has %d of %d voting power, needs more than 2/3", ErrInvalid, power, vals.Total())
	}
	return nil
}

// Evidence is two signed votes of one validator for the same height, round
// and step with different values: equivocation.
type Evidence struct {
	A, B Vote
}

// voteSet collects the votes of one type for one height and round.
//
// An equivocating validator's votes count for every value it signed (up to
// maxConflicting of them): a quorum for a value then still needs more than
// two thirds of the power to have signed that value, and two conflicting
// quorums would need an honest validator to sign both, so safety holds;
// meanwhile every honest validator that has received the same messages
// sees the same quorums whatever order the versions arrived in, which
// liveness needs (otherwise a proof of lock seen by some is invisible to
// others for ever). "Any" quorums and round skipping count each validator
// once.
type voteSet struct {
	vals  *ValidatorSet
	byVal map[string][]Vote
	power map[Hash]int64
	any   int64
}

// maxConflicting bounds how many different values one validator's votes
// are counted for in one round (more is evidence only).
const maxConflicting = 4

func newVoteSet(vals *ValidatorSet) *voteSet {
	return &voteSet{vals: vals, byVal: map[string][]Vote{}, power: map[Hash]int64{}}
}

// add records a (verified) vote. A repeat is ignored; a different vote from
// the same validator is counted too and returned as evidence.
func (s *voteSet) add(v Vote) (ev *Evidence) {
	prev := s.byVal[v.Validator]
	for _, old := range prev {
		if old.Value == v.Value {
			return nil
		}
	}
	if len(prev) > 0 {
		ev = &Evidence{A: prev[0], B: v}
	}
	if len(prev) >= maxConflicting {
		return ev
	}
	s.byVal[v.Validator] = append(prev, v)
	p := s.vals.Power(v.Validator)
	s.power[v.Value] += p
	if len(prev) == 0 {
		s.any += p
	}
	return ev
}

// quorumFor reports whether value h has 2/3+ of the power.
func (s *voteSet) quorumFor(h Hash) bool { return s.vals.Quorum(s.power[h]) }

// quorumAny reports whether 2/3+ of the power voted for anything.
func (s *voteSet) quorumAny() bool { return s.vals.Quorum(s.any) }

// quorumValue returns the non-nil value with 2/3+ of the power, if any
// (the smallest hash if, with Byzantine help beyond f, there are several).
func (s *voteSet) quorumValue() (Hash, bool) {
	var best Hash
	found := false
	for h, p := range s.power {
		if !h.IsNil() && s.vals.Quorum(p) && (!found || bytes.Compare(h[:], best[:]) < 0) {
			best, found = h, true
		}
	}
	return best, found
}

// votesFor lists the votes for h, ordered by validator.
func (s *voteSet) votesFor(h Hash) []Vote {
	var out []Vote
	for _, val := range s.vals.vals {
		for _, v := range s.byVal[val.ID] {
			if v.Value == h {
				out = append(out, v)
			}
		}
	}
	return out
}
