package node

import (
	"context"
	"log/slog"
	"testing"

	"github.com/murmur-ml/murmur/learner"
)

// A private update is charged to the budget when it is released, not when
// its training starts: one that comes back too late for its height (a peer
// that caught up meanwhile) is dropped unreleased and costs nothing; one
// for the current or the previous height (announced late) is charged once,
// durably.
func TestPrivacyChargedOnRelease(t *testing.T) {
	const sigma = 2.0
	one := func(n int) float64 {
		b, _ := learner.NewBudget(1e9, 1e-5)
		e, _ := b.After(sigma, 1, n)
		return e
	}
	tests := []struct {
		name     string
		height   uint64 // the trained update's height; the core is at 5
		released bool
	}{
		{"current height", 5, true},
		{"one height late", 4, true},
		{"stale", 3, false},
		{"caught up past it", 1, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, 4, 1, -1)
			core := w.cores[0]
			core.height = 5
			budget, _ := learner.NewBudget(1e9, 1e-5)
			var recorded []int
			s := &Shell{Core: core, Log: slog.New(slog.DiscardHandler), Privacy: &Privacy{DP: learner.DPConfig{Clip: 1, Sigma: sigma}, Budget: budget,
				Spent: func(n int) error { recorded = append(recorded, n); return nil }}}
			s.training = true
			unspent := budget.Spent() // ε of nothing composed (the accountant's floor)
			ev, err := s.trained(context.Background(), trainingDone{result: Trained{Height: tc.height, Update: fakeCID("u", tc.height)}, private: true}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if (ev != nil) != tc.released {
				t.Fatalf("event %v, want released %v", ev, tc.released)
			}
			want, wantRec := unspent, []int(nil)
			if tc.released {
				want, wantRec = one(1), []int{1}
			}
			if got := budget.Spent(); got != want || len(recorded) != len(wantRec) || (len(wantRec) > 0 && recorded[0] != 1) || s.Released() != len(wantRec) {
				t.Fatalf("spent ε %v (want %v), recorded %v, released %d", got, want, recorded, s.Released())
			}
		})
	}
}
