package learner

import (
	"fmt"
	"math"
	"runtime"
	"sync"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// net is a gorgonia expression graph for one model at one batch size. The
// parameter nodes hold tensors backed by slices of the model's flat
// parameter vector, so an optimiser that updates the vector updates the
// graph with no copy, and the vector is always the model's truth.
type net struct {
	vm     G.VM
	batch  int
	dim    int
	xBuf   []float32 // batch×dim input, refilled before each run
	yBuf   []float32 // batch×10 one-hot targets; nil for a forward-only net
	wBuf   []float32 // per-row loss weights (0 for padding rows)
	grads  G.Nodes   // parameter gradients, then (perExample) pre-activation gradients
	acts   []G.Value // perExample: the input of each dense layer after a run
	nParam int
	logp   G.Value // batch×10 log-probabilities after a run
	cost   G.Value
	closed bool
}

// Graph kinds.
const (
	forwardOnly = iota
	training
	perExample // training plus what per-example gradient norms need (DP-SGD)
)

// buildMu serialises graph construction in the process. gorgonia numbers
// the groups of Rectify, Conv2d and MaxPool nodes with an unsynchronised
// package counter (internal/encoding.groupIndex, labels for graphviz
// output), and a peer builds graphs concurrently: it trains while it
// evaluates the head, and the simulator trains peers in parallel (the race
// detector caught both). It is this package's one package-level variable
// because what it guards is gorgonia's; building a graph takes
// milliseconds, running it the time.
var buildMu sync.Mutex

// newNet builds the graph of m's architecture for batches of the given size.
// For training it also builds the weighted cross-entropy loss
// −Σ_i w_i Σ_c y_ic log p_ic and its gradients; perExample adds the
// gradients with respect to each dense layer's pre-activations and reads
// each layer's input, from which per-example gradient norms follow.
func newNet(m *Model, batch int, kind int) (*net, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if kind == perExample && m.Arch.Name != Arch2NN {
		return nil, fmt.Errorf("%w: per-example clipping (DP-SGD) supports the %s only", ErrModel, Arch2NN)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	g := G.NewGraph()
	off := m.Arch.Offsets()
	params := make([]*G.Node, len(m.Arch.Layers))
	for i, l := range m.Arch.Layers {
		shape := l.Shape
		switch {
		case len(shape) == 1 && m.Arch.Name == ArchCNN && i < 4:
			shape = []int{1, shape[0], 1, 1} // conv bias, broadcast over batch and space
		case len(shape) == 1:
			shape = []int{1, shape[0]} // dense bias, broadcast over the batch
		}
		t := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(m.Params[off[i]:off[i+1]]))
		params[i] = G.NodeFromAny(g, t, G.WithName(l.Name))
	}
	n := &net{batch: batch, dim: 28 * 28}
	n.xBuf = make([]float32, batch*n.dim)
	var x, logits *G.Node
	var inputs, preacts []*G.Node
	var err error
	switch m.Arch.Name {
	case Arch2NN:
		x = G.NodeFromAny(g, tensor.New(tensor.WithShape(batch, n.dim), tensor.WithBacking(n.xBuf)), G.WithName("x"))
		var probe func(*G.Node) (*G.Node, *G.Node, error)
		if kind == perExample {
			probe = zeroProbe(g)
		}
		logits, inputs, preacts, err = mlpForward(x, params, probe)
	case ArchCNN:
		x = G.NodeFromAny(g, tensor.New(tensor.WithShape(batch, 1, 28, 28), tensor.WithBacking(n.xBuf)), G.WithName("x"))
		logits, err = cnnForward(x, params, batch)
	default:
		return nil, fmt.Errorf("%w: no graph for architecture %q", ErrModel, m.Arch.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: building %s graph: %w", ErrModel, m.Arch.Name, err)
	}
	logp, err := G.LogSoftMax(logits)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	G.Read(logp, &n.logp)
	if kind != forwardOnly {
		n.yBuf = make([]float32, batch*NumClasses)
		n.wBuf = make([]float32, batch)
		y := G.NodeFromAny(g, tensor.New(tensor.WithShape(batch, NumClasses), tensor.WithBacking(n.yBuf)), G.WithName("y"))
		w := G.NodeFromAny(g, tensor.New(tensor.WithShape(batch), tensor.WithBacking(n.wBuf)), G.WithName("w"))
		cost, err := crossEntropy(logp, y, w)
		if err != nil {
			return nil, fmt.Errorf("%w: loss: %w", ErrModel, err)
		}
		G.Read(cost, &n.cost)
		wrt := params
		n.nParam = len(params)
		if kind == perExample {
			wrt = append(append([]*G.Node{}, params...), preacts...)
			n.acts = make([]G.Value, len(inputs))
			for i, a := range inputs {
				G.Read(a, &n.acts[i])
			}
		}
		if n.grads, err = G.Grad(cost, wrt...); err != nil {
			return nil, fmt.Errorf("%w: gradients: %w", ErrModel, err)
		}
	}
	n.vm = G.NewTapeMachine(g)
	return n, nil
}

// zeroProbe returns a function that adds an all-zero input node to a
// pre-activation. gorgonia differentiates only with respect to input nodes;
// the gradient with respect to the probe is the gradient with respect to the
// pre-activation, which per-example norms need.
func zeroProbe(g *G.ExprGraph) func(*G.Node) (*G.Node, *G.Node, error) {
	return func(z *G.Node) (*G.Node, *G.Node, error) {
		shape := z.Shape().Clone()
		e := G.NodeFromAny(g, tensor.New(tensor.WithShape(shape...), tensor.Of(tensor.Float32)), G.WithName(z.Name()+".probe"))
		out, err := G.Add(z, e)
		return out, e, err
	}
}

// mlpForward stacks dense layers (ReLU between them) and returns the
// logits, each layer's input and, if probe is set, each layer's
// pre-activation probe.
func mlpForward(x *G.Node, p []*G.Node, probe func(*G.Node) (*G.Node, *G.Node, error)) (logits *G.Node, inputs, preacts []*G.Node, err error) {
	h := x
	for i := 0; i < len(p); i += 2 {
		inputs = append(inputs, h)
		xw, err := G.Mul(h, p[i])
		if err != nil {
			return nil, nil, nil, err
		}
		if h, err = G.BroadcastAdd(xw, p[i+1], nil, []byte{0}); err != nil {
			return nil, nil, nil, err
		}
		if probe != nil {
			var e *G.Node
			if h, e, err = probe(h); err != nil {
				return nil, nil, nil, err
			}
			preacts = append(preacts, e)
		}
		if i+2 < len(p) {
			if h, err = G.Rectify(h); err != nil {
				return nil, nil, nil, err
			}
		}
	}
	return h, inputs, preacts, nil
}

func cnnForward(x *G.Node, p []*G.Node, batch int) (*G.Node, error) {
	h := x
	var err error
	for i := 0; i < 4; i += 2 {
		if h, err = G.Conv2d(h, p[i], tensor.Shape{cnnK, cnnK}, []int{2, 2}, []int{1, 1}, []int{1, 1}); err != nil {
			return nil, err
		}
		if h, err = G.BroadcastAdd(h, p[i+1], nil, []byte{0, 2, 3}); err != nil {
			return nil, err
		}
		if h, err = G.Rectify(h); err != nil {
			return nil, err
		}
		if h, err = G.MaxPool2D(h, tensor.Shape{2, 2}, []int{0, 0}, []int{2, 2}); err != nil {
			return nil, err
		}
	}
	if h, err = G.Reshape(h, tensor.Shape{batch, cnnC2 * 7 * 7}); err != nil {
		return nil, err
	}
	logits, _, _, err := mlpForward(h, p[4:], nil)
	return logits, err
}

// crossEntropy is −Σ_i w_i Σ_c y_ic·log p_ic: with w_i = 1/B the usual mean,
// with w_i = 0 a padding row that does not count.
func crossEntropy(logp, y, w *G.Node) (*G.Node, error) {
	prod, err := G.HadamardProd(logp, y)
	if err != nil {
		return nil, err
	}
	rows, err := G.Sum(prod, 1)
	if err != nil {
		return nil, err
	}
	weighted, err := G.HadamardProd(rows, w)
	if err != nil {
		return nil, err
	}
	total, err := G.Sum(weighted)
	if err != nil {
		return nil, err
	}
	return G.Neg(total)
}

// load copies the samples idx of d into the input buffer (and, if the net
// trains, the one-hot targets and loss weights 1/len(idx)). Rows past
// len(idx) are zero padding with weight 0.
func (n *net) load(d *Dataset, idx []int) {
	clear(n.xBuf)
	for r, i := range idx {
		copy(n.xBuf[r*n.dim:(r+1)*n.dim], d.Image(i))
	}
	if n.yBuf != nil {
		clear(n.yBuf)
		clear(n.wBuf)
		for r, i := range idx {
			n.yBuf[r*NumClasses+int(d.Labels[i])] = 1
			n.wBuf[r] = 1 / float32(len(idx))
		}
	}
}

// run executes the graph once on the loaded batch.
func (n *net) run() error {
	// Reset before, not after, a run: the values read below live in the
	// machine's registers until the next run.
	n.vm.Reset()
	if err := n.vm.RunAll(); err != nil {
		return fmt.Errorf("%w: %w", ErrModel, err)
	}
	return nil
}

// logProbs returns the batch×10 log-probabilities of the last run.
func (n *net) logProbs() []float32 { return n.logp.Data().([]float32) }

// loss returns the mean cross-entropy of the last run.
func (n *net) loss() float32 { return n.cost.Data().(float32) }

// grad returns the gradient of parameter tensor i from the last run.
func (n *net) grad(i int) []float32 { return n.grads[i].Value().Data().([]float32) }

// clipExamples turns the loaded batch of rows real examples into a
// clipped sum: a first run with unit weights yields every example's
// gradient norm, and the weights are then set to min(1, clip/‖g_i‖)/scale,
// so that the next run's gradients are Σ_i clip(g_i)/scale.
// It returns the mean loss of the real rows.
func (n *net) clipExamples(rows int, clip, scale float64) (float64, error) {
	for r := range rows {
		n.wBuf[r] = 1
	}
	if err := n.run(); err != nil {
		return 0, err
	}
	loss := float64(n.loss()) / float64(max(rows, 1))
	norms := n.exampleNorms()
	for r := range rows {
		f := 1.0
		if norms[r] > clip {
			f = clip / norms[r]
		}
		n.wBuf[r] = float32(f / scale)
	}
	return loss, nil
}

// exampleNorms returns, for each row, the L2 norm of that example's own
// gradient over all parameters, from the last run with unit row weights.
// A dense layer's per-example weight gradient is the outer product a_i ⊗ δ_i,
// whose norm is ‖a_i‖·‖δ_i‖, and its bias gradient is δ_i: so
// ‖g_i‖² = Σ_layers (‖a_i‖² + 1)·‖δ_i‖², with no per-example backward pass
// (Goodfellow 2015).
func (n *net) exampleNorms() []float64 {
	sq := make([]float64, n.batch)
	for l, a := range n.acts {
		act := a.Data().([]float32)
		dz := n.grads[n.nParam+l].Value().Data().([]float32)
		in, out := len(act)/n.batch, len(dz)/n.batch
		for r := range n.batch {
			var aa, dd float64
			for _, v := range act[r*in : (r+1)*in] {
				aa += float64(v) * float64(v)
			}
			for _, v := range dz[r*out : (r+1)*out] {
				dd += float64(v) * float64(v)
			}
			sq[r] += (aa + 1) * dd
		}
	}
	for r := range sq {
		sq[r] = math.Sqrt(sq[r])
	}
	return sq
}

// Close releases the machine. gorgonia sets a finalizer on every tape
// machine (a no-op without CUDA), and the machine sits in a reference cycle
// with its graph; Go never collects a cycle that holds a finalizer, so every
// graph — with all its tensors, ~86 MB for the CNN at batch 64 — would stay
// in memory for good. Clearing the finalizer lets the collector free it.
func (n *net) Close() {
	if !n.closed {
		n.closed = true
		n.vm.Close()
		runtime.SetFinalizer(n.vm, nil)
	}
}
