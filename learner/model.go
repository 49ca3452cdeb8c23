package learner

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// ErrModel reports an unknown architecture or a parameter vector that does
// not fit its architecture.
var ErrModel = errors.New("model")

// Architecture names.
const (
	Arch2NN = "2nn" // McMahan et al. 2017: 784-200-200-10, ReLU
	ArchCNN = "cnn" // two 5×5 conv + 2×2 max-pool layers, one dense layer
)

// Layer is one named parameter tensor of a model.
type Layer struct {
	Name  string `json:"name"`
	Shape []int  `json:"shape"`
}

// Size is the number of parameters of the layer.
func (l Layer) Size() int {
	n := 1
	for _, d := range l.Shape {
		n *= d
	}
	return n
}

// Arch describes a model: its name and its parameter tensors in the order in
// which they lie in the flat parameter vector (all float32).
type Arch struct {
	Name   string  `json:"name"`
	Layers []Layer `json:"layers"`
}

// NumParams is the length of the flat parameter vector.
func (a Arch) NumParams() int {
	n := 0
	for _, l := range a.Layers {
		n += l.Size()
	}
	return n
}

// Offsets gives the start of each layer in the parameter vector, plus the
// total length as a last element.
func (a Arch) Offsets() []int {
	off := make([]int, 0, len(a.Layers)+1)
	n := 0
	for _, l := range a.Layers {
		off = append(off, n)
		n += l.Size()
	}
	return append(off, n)
}

// Equal reports whether two architectures are the same.
func (a Arch) Equal(b Arch) bool {
	return a.Name == b.Name && slices.EqualFunc(a.Layers, b.Layers, func(x, y Layer) bool {
		return x.Name == y.Name && slices.Equal(x.Shape, y.Shape)
	})
}

// cnn sizes: 28×28 → conv 5×5 pad 2 (16 ch) → pool → 14×14 → conv (32 ch) →
// pool → 7×7 → dense 1568 → 10.
const (
	cnnC1 = 16
	cnnC2 = 32
	cnnK  = 5
)

// ArchByName returns the architecture for an MNIST-shaped (28×28, 10 class)
// input.
func ArchByName(name string) (Arch, error) {
	switch name {
	case Arch2NN:
		return Arch{Name: Arch2NN, Layers: []Layer{
			{"fc1.weight", []int{784, 200}}, {"fc1.bias", []int{200}},
			{"fc2.weight", []int{200, 200}}, {"fc2.bias", []int{200}},
			{"fc3.weight", []int{200, NumClasses}}, {"fc3.bias", []int{NumClasses}},
		}}, nil
	case ArchCNN:
		return Arch{Name: ArchCNN, Layers: []Layer{
			{"conv1.weight", []int{cnnC1, 1, cnnK, cnnK}}, {"conv1.bias", []int{cnnC1}},
			{"conv2.weight", []int{cnnC2, cnnC1, cnnK, cnnK}}, {"conv2.bias", []int{cnnC2}},
			{"fc.weight", []int{cnnC2 * 7 * 7, NumClasses}}, {"fc.bias", []int{NumClasses}},
		}}, nil
	}
	return Arch{}, fmt.Errorf("%w: unknown architecture %q (want %s or %s)", ErrModel, name, Arch2NN, ArchCNN)
}

// Model is an architecture and its flat parameter vector.
type Model struct {
	Arch   Arch
	Params []float32
}

// NewModel makes a model of the named architecture with weights drawn from
// rng: He-uniform for weight tensors (fan-in from all but the output
// dimension), zero biases. gorgonia's own initialisers seed from the clock
// and are never used.
func NewModel(name string, rng *rand.Rand) (*Model, error) {
	arch, err := ArchByName(name)
	if err != nil {
		return nil, err
	}
	m := &Model{Arch: arch, Params: make([]float32, arch.NumParams())}
	off := arch.Offsets()
	for i, l := range arch.Layers {
		if len(l.Shape) < 2 {
			continue // bias: zero
		}
		fanIn := l.Size() / l.Shape[len(l.Shape)-1] // dense: [in, out]
		if len(l.Shape) == 4 {                      // conv: [out, in, kh, kw]
			fanIn = l.Shape[1] * l.Shape[2] * l.Shape[3]
		}
		bound := math.Sqrt(6 / float64(fanIn))
		for j := off[i]; j < off[i+1]; j++ {
			m.Params[j] = float32((2*rng.Float64() - 1) * bound)
		}
	}
	return m, nil
}

// Clone deep-copies the model.
func (m *Model) Clone() *Model {
	return &Model{Arch: m.Arch, Params: slices.Clone(m.Params)}
}

// Validate checks that the parameter vector fits the architecture and holds
// only finite numbers.
func (m *Model) Validate() error {
	if want := m.Arch.NumParams(); len(m.Params) != want {
		return fmt.Errorf("%w: %d parameters for %s, want %d", ErrModel, len(m.Params), m.Arch.Name, want)
	}
	for i, p := range m.Params {
		if math.IsNaN(float64(p)) || math.IsInf(float64(p), 0) {
			return fmt.Errorf("%w: parameter %d is %v", ErrModel, i, p)
		}
	}
	return nil
}

// Delta returns local − base, the update a trainer announces.
func Delta(local, base []float32) []float32 {
	if len(local) != len(base) {
		panic("learner: Delta of vectors of different length")
	}
	d := make([]float32, len(local))
	for i := range d {
		d[i] = local[i] - base[i]
	}
	return d
}

// ApplyMomentum is server momentum (FedAvgM, Hsu et al. 2019) computed
// from the chain alone: base + agg + μ·(base − parent), where parent is the
// model base was made from (nil at the first height: no momentum). Every
// validator holds both, so the step stays re-executable and bit-identical.
func ApplyMomentum(base, parent, agg []float32, mu float64) []float32 {
	if mu == 0 || parent == nil {
		return Apply(base, agg)
	}
	if len(parent) != len(base) || len(agg) != len(base) {
		panic("learner: ApplyMomentum of vectors of different length")
	}
	m := float32(mu)
	out := make([]float32, len(base))
	for i := range out {
		v := float32(agg[i]) + float32(m*float32(base[i]-parent[i]))
		out[i] = float32(base[i] + v)
	}
	return out
}

// Apply returns base + delta as a new vector.
func Apply(base, delta []float32) []float32 {
	if len(delta) != len(base) {
		panic("learner: Apply of vectors of different length")
	}
	out := make([]float32, len(base))
	for i := range out {
		out[i] = base[i] + delta[i]
	}
	return out
}
