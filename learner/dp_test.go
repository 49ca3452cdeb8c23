package learner

import (
	"math"
	"slices"
	"testing"
)

func TestPrivatize(t *testing.T) {
	delta := make([]float32, 20000)
	for i := range delta {
		delta[i] = 1
	}
	seed := [32]byte{1}
	cfg := DPConfig{Clip: 2, Sigma: 0.5}
	a, err := Privatize(delta, cfg, NewNoiseRand(&seed))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Privatize(delta, cfg, NewNoiseRand(&seed))
	if !slices.Equal(a, b) {
		t.Fatal("same seed, different noise")
	}
	c, _ := Privatize(delta, cfg, NewNoiseRand(nil))
	if slices.Equal(a, c) {
		t.Fatal("crypto-seeded noise equals the fixed seed's")
	}
	// Clipped signal: each coordinate 2/√20000; noise std σC = 1.
	signal := 2 / math.Sqrt(20000)
	var sum, sq float64
	for _, v := range a {
		n := float64(v) - signal
		sum += n
		sq += n * n
	}
	mean, std := sum/float64(len(a)), math.Sqrt(sq/float64(len(a)))
	if math.Abs(mean) > 0.03 || math.Abs(std-1) > 0.03 {
		t.Fatalf("noise mean %.4f std %.4f, want 0 and 1", mean, std)
	}
	if _, err := Privatize(delta, DPConfig{Clip: 0, Sigma: 1}, NewNoiseRand(nil)); err == nil {
		t.Fatal("clip 0 accepted")
	}
}

func TestClipL2(t *testing.T) {
	x := []float32{3, 4}
	if got := ClipL2(x, 10); &got[0] != &x[0] {
		t.Fatal("a vector within the bound was copied")
	}
	got := ClipL2(x, 1)
	if math.Abs(L2Norm(got)-1) > 1e-6 || math.Abs(float64(got[0])-0.6) > 1e-6 {
		t.Fatalf("clipped to %v", got)
	}
}
