package learner

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
)

// ErrPartition reports an unknown or impossible partition spec.
var ErrPartition = errors.New("partition")

// Partition says how a training set is divided among peers.
type Partition struct {
	Kind  string  // "iid", "dirichlet" or "shards"
	Alpha float64 // Dirichlet concentration (dirichlet)
	K     int     // shards per peer (shards)
}

// String renders the partition in the form ParsePartition reads.
func (p Partition) String() string {
	switch p.Kind {
	case "dirichlet":
		return "dirichlet:" + strconv.FormatFloat(p.Alpha, 'g', -1, 64)
	case "shards":
		return "shards:" + strconv.Itoa(p.K)
	}
	return p.Kind
}

// ParsePartition reads "iid", "dirichlet:A" (A > 0) or "shards:K" (K ≥ 1).
func ParsePartition(s string) (Partition, error) {
	kind, arg, hasArg := strings.Cut(s, ":")
	switch kind {
	case "iid":
		if hasArg {
			return Partition{}, fmt.Errorf("%w: iid takes no parameter (got %q)", ErrPartition, s)
		}
		return Partition{Kind: "iid"}, nil
	case "dirichlet":
		a, err := strconv.ParseFloat(arg, 64)
		if !hasArg || err != nil || !(a > 0) || math.IsInf(a, 0) {
			return Partition{}, fmt.Errorf("%w: %q: want dirichlet:A with A > 0, e.g. dirichlet:0.5", ErrPartition, s)
		}
		return Partition{Kind: "dirichlet", Alpha: a}, nil
	case "shards":
		k, err := strconv.Atoi(arg)
		if !hasArg || err != nil || k < 1 {
			return Partition{}, fmt.Errorf("%w: %q: want shards:K with K ≥ 1, e.g. shards:2", ErrPartition, s)
		}
		return Partition{Kind: "shards", K: k}, nil
	}
	return Partition{}, fmt.Errorf("%w: unknown partition %q (want iid, dirichlet:A or shards:K)", ErrPartition, s)
}

// Split assigns every sample index (labels[i] is sample i's label) to exactly
// one of peers peers. The result is deterministic in rng.
func (p Partition) Split(labels []uint8, peers int, rng *rand.Rand) ([][]int, error) {
	n := len(labels)
	if peers < 1 {
		return nil, fmt.Errorf("%w: %d peers", ErrPartition, peers)
	}
	if n < peers {
		return nil, fmt.Errorf("%w: %d samples cannot be spread over %d peers", ErrPartition, n, peers)
	}
	switch p.Kind {
	case "iid":
		return splitIID(n, peers, rng), nil
	case "dirichlet":
		return splitDirichlet(labels, peers, p.Alpha, rng), nil
	case "shards":
		if n < peers*p.K {
			return nil, fmt.Errorf("%w: %d samples cannot make %d shards", ErrPartition, n, peers*p.K)
		}
		return splitShards(labels, peers, p.K, rng), nil
	}
	return nil, fmt.Errorf("%w: unknown kind %q", ErrPartition, p.Kind)
}

func splitIID(n, peers int, rng *rand.Rand) [][]int {
	perm := rng.Perm(n)
	out := make([][]int, peers)
	for i := range out {
		out[i] = slices.Clone(perm[i*n/peers : (i+1)*n/peers])
	}
	return out
}

// splitDirichlet draws, for each class, the share of each peer from a
// symmetric Dirichlet(alpha) and deals that class's (shuffled) samples out
// accordingly. Draws are repeated (from the same rng, so still deterministic)
// until every peer holds at least minSize samples, as in Hsu et al. 2019.
func splitDirichlet(labels []uint8, peers int, alpha float64, rng *rand.Rand) [][]int {
	byClass := make([][]int, NumClasses)
	for i, l := range labels {
		byClass[l] = append(byClass[l], i)
	}
	minSize := min(10, len(labels)/peers)
	var out [][]int
	for attempt := 0; ; attempt++ {
		out = make([][]int, peers)
		for _, idx := range byClass {
			idx = slices.Clone(idx)
			rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
			props := dirichlet(peers, alpha, rng)
			start := 0
			cum := 0.0
			for p := range peers {
				cum += props[p]
				end := int(math.Round(cum * float64(len(idx))))
				if p == peers-1 {
					end = len(idx)
				}
				end = max(end, start)
				out[p] = append(out[p], idx[start:end]...)
				start = end
			}
		}
		smallest := len(labels)
		for _, o := range out {
			smallest = min(smallest, len(o))
		}
		if smallest >= minSize || attempt >= 1000 {
			break
		}
	}
	for _, o := range out {
		slices.Sort(o)
	}
	return out
}

// splitShards sorts the samples by label, cuts them into peers·k shards of
// (nearly) equal size and gives each peer k shards chosen at random: the
// pathological non-IID split of McMahan et al. 2017.
func splitShards(labels []uint8, peers, k int, rng *rand.Rand) [][]int {
	n := len(labels)
	sorted := make([]int, n)
	for i := range sorted {
		sorted[i] = i
	}
	slices.SortStableFunc(sorted, func(a, b int) int { return int(labels[a]) - int(labels[b]) })
	total := peers * k
	order := rng.Perm(total)
	out := make([][]int, peers)
	for j, s := range order {
		p := j / k
		out[p] = append(out[p], sorted[s*n/total:(s+1)*n/total]...)
	}
	for _, o := range out {
		slices.Sort(o)
	}
	return out
}

// dirichlet draws one sample of a symmetric Dirichlet(alpha) of dimension k.
func dirichlet(k int, alpha float64, rng *rand.Rand) []float64 {
	x := make([]float64, k)
	sum := 0.0
	for i := range x {
		x[i] = gamma(alpha, rng)
		sum += x[i]
	}
	if sum == 0 { // every draw underflowed (tiny alpha): all mass on one peer
		x[rng.IntN(k)] = 1
		return x
	}
	for i := range x {
		x[i] /= sum
	}
	return x
}

// gamma draws from Gamma(shape, 1) by Marsaglia and Tsang's method, with the
// usual U^(1/shape) boost for shape < 1.
func gamma(shape float64, rng *rand.Rand) float64 {
	if shape < 1 {
		u := rng.Float64()
		return gamma(shape+1, rng) * math.Pow(u, 1/shape)
	}
	d := shape - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		var x, v float64
		for v <= 0 {
			x = rng.NormFloat64()
			v = 1 + c*x
		}
		v = v * v * v
		u := rng.Float64()
		if u < 1-0.0331*x*x*x*x || math.Log(u) < 0.5*x*x+d*(1-v+math.Log(v)) {
			return d * v
		}
	}
}
