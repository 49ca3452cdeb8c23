package learner

import (
	"errors"
	"fmt"
	"math/rand/v2"
)

// NumClasses is the number of labels of every dataset this package handles.
const NumClasses = 10

// ErrDataset reports a dataset that is missing, truncated or malformed.
var ErrDataset = errors.New("dataset")

// Dataset is a set of single-channel images with integer labels. Pixels are
// stored row-major, one image after another, already normalised for training.
type Dataset struct {
	Rows, Cols int
	Pixels     []float32 // len = N() * Rows * Cols
	Labels     []uint8   // len = N()
}

// N is the number of samples.
func (d *Dataset) N() int { return len(d.Labels) }

// Dim is the number of pixels of one image.
func (d *Dataset) Dim() int { return d.Rows * d.Cols }

// Image returns the pixels of sample i (a view, not a copy).
func (d *Dataset) Image(i int) []float32 {
	dim := d.Dim()
	return d.Pixels[i*dim : (i+1)*dim]
}

// Subset copies the samples at idx, in that order, into a new dataset.
func (d *Dataset) Subset(idx []int) *Dataset {
	dim := d.Dim()
	out := &Dataset{Rows: d.Rows, Cols: d.Cols,
		Pixels: make([]float32, 0, len(idx)*dim), Labels: make([]uint8, 0, len(idx))}
	for _, i := range idx {
		out.Pixels = append(out.Pixels, d.Image(i)...)
		out.Labels = append(out.Labels, d.Labels[i])
	}
	return out
}

// Split shuffles the samples with rng and splits off a held-out fraction
// (for validation / early stopping). frac must be in [0, 1).
func (d *Dataset) Split(frac float64, rng *rand.Rand) (train, held *Dataset, err error) {
	if frac < 0 || frac >= 1 {
		return nil, nil, fmt.Errorf("%w: held-out fraction %v outside [0,1)", ErrDataset, frac)
	}
	perm := rng.Perm(d.N())
	k := int(frac * float64(d.N()))
	return d.Subset(perm[k:]), d.Subset(perm[:k]), nil
}

// LabelCounts counts the samples of each class.
func (d *Dataset) LabelCounts() [NumClasses]int {
	var c [NumClasses]int
	for _, l := range d.Labels {
		c[l]++
	}
	return c
}

// validate checks the invariants every constructor promises.
func (d *Dataset) validate() error {
	if d.Rows <= 0 || d.Cols <= 0 {
		return fmt.Errorf("%w: image size %dx%d", ErrDataset, d.Rows, d.Cols)
	}
	if len(d.Pixels) != d.N()*d.Dim() {
		return fmt.Errorf("%w: %d pixels for %d images of %d", ErrDataset, len(d.Pixels), d.N(), d.Dim())
	}
	for i, l := range d.Labels {
		if int(l) >= NumClasses {
			return fmt.Errorf("%w: label %d of sample %d is not in 0..%d", ErrDataset, l, i, NumClasses-1)
		}
	}
	return nil
}

// Synthetic makes a seeded MNIST-shaped (28×28, 10 classes) dataset: each
// class has a random prototype image and each sample is its class prototype
// plus Gaussian noise. It is learnable in a few steps, so unit tests of
// training, partitioning and aggregation run in milliseconds.
func Synthetic(n int, rng *rand.Rand) *Dataset {
	const side = 28
	dim := side * side
	protos := make([][]float32, NumClasses)
	for c := range protos {
		protos[c] = make([]float32, dim)
		for j := range protos[c] {
			if rng.Float64() < 0.2 {
				protos[c][j] = 1.5
			}
		}
	}
	d := &Dataset{Rows: side, Cols: side, Pixels: make([]float32, n*dim), Labels: make([]uint8, n)}
	for i := 0; i < n; i++ {
		c := rng.IntN(NumClasses)
		d.Labels[i] = uint8(c)
		img := d.Pixels[i*dim : (i+1)*dim]
		for j := range img {
			img[j] = protos[c][j] + float32(0.5*rng.NormFloat64())
		}
	}
	return d
}
