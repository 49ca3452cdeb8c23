package learner

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestAttacks(t *testing.T) {
	honest := [][]float32{{1, 2}, {3, 2}}
	own := []float32{1, -1}
	rng := rand.New(rand.NewPCG(1, 1))
	tests := []struct {
		name string
		want []float32
	}{
		{AttackSignFlip, []float32{-4, 4}},
		{AttackScale, []float32{100, -100}},
		{AttackIPM, []float32{-1, -1}},
		{AttackLabelFlip, own},
	}
	for _, tc := range tests {
		a, err := ParseAttack(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		got := a.Forge(own, honest, 2, 10, 3, rng)
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
			}
		}
	}
	// ALIE with n=10, f=3: s = 6−3 = 3, z = Φ⁻¹(0.7) ≈ 0.5244.
	a, _ := ParseAttack(AttackALIE)
	got := a.Forge(nil, honest, 2, 10, 3, rng)
	if want := 2 - 0.5244*1; math.Abs(float64(got[0])-want) > 1e-3 || got[1] != 2 {
		t.Errorf("alie: %v, want [%.4f 2]", got, want)
	}
	d := &Dataset{Rows: 1, Cols: 1, Pixels: []float32{0, 0}, Labels: []uint8{0, 7}}
	lf, _ := ParseAttack(AttackLabelFlip)
	if p := lf.Poison(d); p.Labels[0] != 9 || p.Labels[1] != 2 || d.Labels[1] != 7 {
		t.Errorf("label flip: %v (original now %v)", p.Labels, d.Labels)
	}
	if _, err := ParseAttack("backdoor"); err == nil {
		t.Error("unknown attack accepted")
	}
}
