package learner

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestParsePartition(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{"iid", "iid", ""},
		{"dirichlet:0.5", "dirichlet:0.5", ""},
		{"shards:2", "shards:2", ""},
		{"dirichlet:0", "", "A > 0"},
		{"dirichlet:x", "", "A > 0"},
		{"dirichlet", "", "A > 0"},
		{"shards:0", "", "K ≥ 1"},
		{"iid:3", "", "no parameter"},
		{"zipf:2", "", "unknown partition"},
	}
	for _, tc := range tests {
		p, err := ParsePartition(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || p.String() != tc.want {
			t.Errorf("%q: %v, %v", tc.in, p, err)
		}
	}
}

func TestPartitionSplit(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	labels := Synthetic(3000, rng).Labels
	for _, spec := range []string{"iid", "dirichlet:0.1", "dirichlet:0.5", "dirichlet:100", "shards:2", "shards:1"} {
		t.Run(spec, func(t *testing.T) {
			p, _ := ParsePartition(spec)
			const peers = 10
			a, err := p.Split(labels, peers, rand.New(rand.NewPCG(1, 2)))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := p.Split(labels, peers, rand.New(rand.NewPCG(1, 2)))
			if !slices.EqualFunc(a, b, slices.Equal) {
				t.Fatal("same seed, different split")
			}
			seen := make([]int, len(labels))
			for _, part := range a {
				if len(part) == 0 {
					t.Fatal("a peer got no samples")
				}
				for _, i := range part {
					seen[i]++
				}
			}
			for i, s := range seen {
				if s != 1 {
					t.Fatalf("sample %d used %d times", i, s)
				}
			}
			// Label skew: how many classes the most specialised peer holds
			// more than 5% of its data in.
			minClasses := NumClasses
			for _, part := range a {
				var c [NumClasses]int
				for _, i := range part {
					c[labels[i]]++
				}
				k := 0
				for _, n := range c {
					if n*20 > len(part) {
						k++
					}
				}
				minClasses = min(minClasses, k)
			}
			switch spec {
			case "iid", "dirichlet:100":
				if minClasses != NumClasses {
					t.Errorf("%s: a peer holds only %d classes", spec, minClasses)
				}
			case "shards:1":
				if minClasses > 2 {
					t.Errorf("%s: every peer holds ≥ %d classes", spec, minClasses)
				}
			case "shards:2", "dirichlet:0.1":
				if minClasses > 4 {
					t.Errorf("%s: every peer holds ≥ %d classes", spec, minClasses)
				}
			}
		})
	}
}

func TestPartitionErrors(t *testing.T) {
	p, _ := ParsePartition("shards:5")
	if _, err := p.Split(make([]uint8, 20), 10, rand.New(rand.NewPCG(1, 1))); err == nil {
		t.Error("50 shards of 20 samples accepted")
	}
	p, _ = ParsePartition("iid")
	if _, err := p.Split(make([]uint8, 3), 10, rand.New(rand.NewPCG(1, 1))); err == nil {
		t.Error("3 samples over 10 peers accepted")
	}
	if _, err := p.Split(make([]uint8, 3), 0, rand.New(rand.NewPCG(1, 1))); err == nil {
		t.Error("0 peers accepted")
	}
}
