package learner

import (
	"math"
	"math/rand/v2"
)

// refMLP is a plain-Go 784-200-200-10 ReLU MLP with softmax cross-entropy
// and the same SGD-with-momentum update as Train: the baseline the gorgonia
// trainer is benchmarked against. Weights live in one flat vector laid out
// like Arch2NN's, so the two start from identical parameters.
type refMLP struct {
	sizes  []int
	params []float32
	vel    []float32
	grad   []float32
	acts   [][]float32 // per layer: batch × width (post-activation)
	deltas [][]float32
}

func newRefMLP(params []float32, batch int) *refMLP {
	sizes := []int{784, 200, 200, 10}
	r := &refMLP{sizes: sizes, params: params, vel: make([]float32, len(params)), grad: make([]float32, len(params))}
	for _, s := range sizes {
		r.acts = append(r.acts, make([]float32, batch*s))
		r.deltas = append(r.deltas, make([]float32, batch*s))
	}
	return r
}

// layer returns the weight ([in, out]) and bias views of layer l.
func (r *refMLP) layer(v []float32, l int) (w, b []float32) {
	off := 0
	for i := 0; i < l; i++ {
		off += r.sizes[i]*r.sizes[i+1] + r.sizes[i+1]
	}
	in, out := r.sizes[l], r.sizes[l+1]
	return v[off : off+in*out], v[off+in*out : off+in*out+out]
}

// step trains on one batch (x: batch×784, labels) and returns the loss.
func (r *refMLP) step(x []float32, labels []uint8, lr, mom, wd float32) float64 {
	batch := len(labels)
	copy(r.acts[0], x)
	for l := 0; l < 3; l++ {
		in, out := r.sizes[l], r.sizes[l+1]
		w, b := r.layer(r.params, l)
		a, z := r.acts[l], r.acts[l+1]
		for n := 0; n < batch; n++ {
			zr := z[n*out : (n+1)*out]
			copy(zr, b)
			ar := a[n*in : (n+1)*in]
			for i, av := range ar {
				if av == 0 {
					continue
				}
				wr := w[i*out : (i+1)*out]
				for j := range zr {
					zr[j] += av * wr[j]
				}
			}
			if l < 2 {
				for j, v := range zr {
					if v < 0 {
						zr[j] = 0
					}
				}
			}
		}
	}
	// Softmax cross-entropy; delta of the logits is (p − y)/batch.
	var loss float64
	logits, d := r.acts[3], r.deltas[3]
	for n := 0; n < batch; n++ {
		row, drow := logits[n*10:(n+1)*10], d[n*10:(n+1)*10]
		mx := row[0]
		for _, v := range row {
			mx = max(mx, v)
		}
		var sum float64
		for _, v := range row {
			sum += math.Exp(float64(v - mx))
		}
		for j, v := range row {
			p := math.Exp(float64(v-mx)) / sum
			if j == int(labels[n]) {
				loss -= math.Log(p)
				p--
			}
			drow[j] = float32(p / float64(batch))
		}
	}
	clear(r.grad)
	for l := 2; l >= 0; l-- {
		in, out := r.sizes[l], r.sizes[l+1]
		w, _ := r.layer(r.params, l)
		gw, gb := r.layer(r.grad, l)
		a, dOut, dIn := r.acts[l], r.deltas[l+1], r.deltas[l]
		for n := 0; n < batch; n++ {
			dr := dOut[n*out : (n+1)*out]
			for j, v := range dr {
				gb[j] += v
			}
			ar := a[n*in : (n+1)*in]
			for i, av := range ar {
				if av == 0 {
					continue
				}
				gr := gw[i*out : (i+1)*out]
				for j, v := range dr {
					gr[j] += av * v
				}
			}
			if l > 0 {
				di := dIn[n*in : (n+1)*in]
				for i := range di {
					if ar[i] <= 0 { // ReLU gate
						di[i] = 0
						continue
					}
					wr := w[i*out : (i+1)*out]
					var s float32
					for j, v := range dr {
						s += wr[j] * v
					}
					di[i] = s
				}
			}
		}
	}
	for j, g := range r.grad {
		r.vel[j] = mom*r.vel[j] + g + wd*r.params[j]
		r.params[j] -= lr * r.vel[j]
	}
	return loss / float64(batch)
}

// refEpoch trains one epoch in batches of batch, in the order rng gives.
func refEpoch(r *refMLP, d *Dataset, batch int, rng *rand.Rand) float64 {
	perm := rng.Perm(d.N())
	x := make([]float32, batch*d.Dim())
	labels := make([]uint8, batch)
	var loss float64
	steps := d.N() / batch
	for s := 0; s < steps; s++ {
		for k, i := range perm[s*batch : (s+1)*batch] {
			copy(x[k*d.Dim():], d.Image(i))
			labels[k] = d.Labels[i]
		}
		loss += r.step(x, labels, 0.02, 0.9, 1e-4)
	}
	return loss / float64(steps)
}
