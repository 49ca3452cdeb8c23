package consensus

import (
	"cmp"
	"fmt"
	"slices"
)

// Validator is one voting member.
type Validator struct {
	ID    string
	Power int64
}

// ValidatorSet is the fixed membership of a network (from genesis).
type ValidatorSet struct {
	vals  []Validator // sorted by ID
	index map[string]int
	total int64
}

// NewValidatorSet checks and sorts a membership.
func NewValidatorSet(vals []Validator) (*ValidatorSet, error) {
	if len(vals) == 0 {
		return nil, fmt.Errorf("%w: no validators", ErrConfig)
	}
	s := &ValidatorSet{vals: slices.Clone(vals), index: map[string]int{}}
	slices.SortFunc(s.vals, func(a, b Validator) int { return cmp.Compare(a.ID, b.ID) })
	for i, v := range s.vals {
		if v.ID == "" || v.Power <= 0 || v.Power > 1<<40 {
			return nil, fmt.Errorf("%w: validator %q with power %d", ErrConfig, v.ID, v.Power)
		}
		if _, dup := s.index[v.ID]; dup {
			return nil, fmt.Errorf("%w: validator %q listed twice", ErrConfig, v.ID)
		}
		s.index[v.ID] = i
		s.total += v.Power
	}
	return s, nil
}

// Size is the number of validators.
func (s *ValidatorSet) Size() int { return len(s.vals) }

// Validators lists the members sorted by ID.
func (s *ValidatorSet) Validators() []Validator { return slices.Clone(s.vals) }

// Power is a validator's voting power (0 for non-members).
func (s *ValidatorSet) Power(id string) int64 {
	if i, ok := s.index[id]; ok {
		return s.vals[i].Power
	}
	return 0
}

// Total is the sum of voting power.
func (s *ValidatorSet) Total() int64 { return s.total }

// Quorum reports whether power is more than two thirds of the total.
func (s *ValidatorSet) Quorum(power int64) bool { return 3*power > 2*s.total }

// OneThird reports whether power is more than a third of the total: at
// least one honest validator is among them.
func (s *ValidatorSet) OneThird(power int64) bool { return 3*power > s.total }

// Proposer of (height, round): weighted round-robin. Each validator's
// priority grows by its power every turn and the one chosen pays back the
// total, as in Tendermint; turn t = height + round (mod the period) makes
// it a pure function that rotates across heights and rounds alike, computed
// from the start in O(period · n).
func (s *ValidatorSet) Proposer(height uint64, round int32) string {
	period := uint64(s.total) // after total turns priorities repeat exactly
	t := (height + uint64(round)) % period
	prio := make([]int64, len(s.vals))
	chosen := 0
	for turn := uint64(0); turn <= t; turn++ {
		chosen = 0
		for i, v := range s.vals {
			prio[i] += v.Power
			if prio[i] > prio[chosen] {
				chosen = i
			}
		}
		prio[chosen] -= s.total
	}
	return s.vals[chosen].ID
}
