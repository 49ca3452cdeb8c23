package learner

import (
	"math"
	"testing"
)

// Test vectors published in Opacus's opacus/tests/accountants_test.py.
func TestAccountantMatchesOpacus(t *testing.T) {
	eps, err := Epsilon(1.5, 0.04, int(90/0.04), 1e-5)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(eps-7.32911117143) > 1e-6 {
		t.Errorf("ε = %.11f, Opacus says 7.32911117143", eps)
	}
	for _, tc := range []struct {
		steps int
		want  float64
	}{{int(90 / 0.04), 1.416}, {2000, 1.3562}} {
		sigma, err := NoiseMultiplier(8, 1e-5, 0.04, tc.steps)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(sigma-tc.want) > 0.5e-4 { // Opacus asserts 4 places
			t.Errorf("steps %d: noise multiplier %.6f, Opacus says %v", tc.steps, sigma, tc.want)
		}
	}
}

// Vectors of TF-Privacy's rdp_accountant_test (the code Opacus's RDP
// analysis derives from): integer, fractional and infinite orders.
func TestRDPVectors(t *testing.T) {
	tests := []struct {
		q, sigma float64
		steps    int
		order    float64
		want     float64
	}{
		{0, 10, 1, 20, 0},
		{1, 10, 1, 20, 0.1},
		{0.1, 2, 10, 5, 0.07737},
		{0.01, 2.5, 50, 1.5, 0.00065},
		{0.01, 2.5, 50, 2.5, 0.001085},
		{0.01, 2.5, 50, 5, 0.00218075},
		{0.01, 2.5, 50, 50, 0.023846},
		{0.01, 2.5, 50, 100, 167.416307},
		{0.01, 2.5, 50, math.Inf(1), math.Inf(1)},
	}
	for _, tc := range tests {
		got, err := RDP(tc.q, tc.sigma, tc.steps, []float64{tc.order})
		if err != nil {
			t.Fatal(err)
		}
		if math.IsInf(tc.want, 1) {
			if !math.IsInf(got[0], 1) {
				t.Errorf("%+v: got %v, want +Inf", tc, got[0])
			}
			continue
		}
		if math.Abs(got[0]-tc.want) > 1e-5*math.Max(1, tc.want) {
			t.Errorf("q=%v σ=%v steps=%d α=%v: RDP %.8f, want %.8f", tc.q, tc.sigma, tc.steps, tc.order, got[0], tc.want)
		}
	}
}

func TestRDPRejectsBadInput(t *testing.T) {
	for _, tc := range []struct{ q, sigma, order float64 }{{-0.1, 1, 2}, {1.1, 1, 2}, {0.1, -1, 2}, {0.1, 1, 1}, {math.NaN(), 1, 2}} {
		if _, err := RDP(tc.q, tc.sigma, 1, []float64{tc.order}); err == nil {
			t.Errorf("RDP(%v) accepted", tc)
		}
	}
	if _, err := NoiseMultiplier(1e-9, 1e-5, 1, 1000); err == nil {
		t.Error("an unreachable ε was accepted")
	}
}

func TestBudget(t *testing.T) {
	b, err := NewBudget(3, 1e-5)
	if err != nil {
		t.Fatal(err)
	}
	rounds := 0
	for b.CanSpend(5, 1, 1) {
		if err := b.Spend(5, 1, 1); err != nil {
			t.Fatal(err)
		}
		rounds++
	}
	if rounds == 0 || b.Spent() > 3 {
		t.Fatalf("%d rounds, spent %v of 3", rounds, b.Spent())
	}
	if err := b.Spend(5, 1, 1); err == nil {
		t.Fatal("spending past the budget was allowed")
	}
	want, _ := Epsilon(5, 1, rounds, 1e-5)
	if math.Abs(b.Spent()-want) > 1e-12 {
		t.Fatalf("spent %v, composition of %d rounds says %v", b.Spent(), rounds, want)
	}
}
