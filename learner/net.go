package learner

import (
	"fmt"

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
	grads  G.Nodes
	logp   G.Value // batch×10 log-probabilities after a run
	cost   G.Value
	closed bool
}

// newNet builds the graph of m's architecture for batches of the given size.
// With train set it also builds the cross-entropy loss and its gradients.
func newNet(m *Model, batch int, train bool) (*net, error) {
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
	var err error
	switch m.Arch.Name {
	case Arch2NN:
		x = G.NodeFromAny(g, tensor.New(tensor.WithShape(batch, n.dim), tensor.WithBacking(n.xBuf)), G.WithName("x"))
		logits, err = mlpForward(x, params)
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
	if train {
		n.yBuf = make([]float32, batch*NumClasses)
		y := G.NodeFromAny(g, tensor.New(tensor.WithShape(batch, NumClasses), tensor.WithBacking(n.yBuf)), G.WithName("y"))
		cost, err := crossEntropy(logp, y)
		if err != nil {
			return nil, fmt.Errorf("%w: loss: %w", ErrModel, err)
		}
		G.Read(cost, &n.cost)
		if n.grads, err = G.Grad(cost, params...); err != nil {
			return nil, fmt.Errorf("%w: gradients: %w", ErrModel, err)
		}
	}
	n.vm = G.NewTapeMachine(g)
	return n, nil
}

func mlpForward(x *G.Node, p []*G.Node) (*G.Node, error) {
	h := x
	for i := 0; i < len(p); i += 2 {
		xw, err := G.Mul(h, p[i])
		if err != nil {
			return nil, err
		}
		if h, err = G.BroadcastAdd(xw, p[i+1], nil, []byte{0}); err != nil {
			return nil, err
		}
		if i+2 < len(p) {
			if h, err = G.Rectify(h); err != nil {
				return nil, err
			}
		}
	}
	return h, nil
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
	return mlpForward(h, p[4:])
}

// crossEntropy is −mean over the batch of Σ_c y_c·log p_c.
func crossEntropy(logp, y *G.Node) (*G.Node, error) {
	prod, err := G.HadamardProd(logp, y)
	if err != nil {
		return nil, err
	}
	s, err := G.Sum(prod, 1)
	if err != nil {
		return nil, err
	}
	mean, err := G.Mean(s)
	if err != nil {
		return nil, err
	}
	return G.Neg(mean)
}

// load copies the samples idx of d into the input buffer (and the one-hot
// targets if the net trains). Rows past len(idx) are zero-filled padding.
func (n *net) load(d *Dataset, idx []int) {
	clear(n.xBuf)
	for r, i := range idx {
		copy(n.xBuf[r*n.dim:(r+1)*n.dim], d.Image(i))
	}
	if n.yBuf != nil {
		clear(n.yBuf)
		for r, i := range idx {
			n.yBuf[r*NumClasses+int(d.Labels[i])] = 1
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

func (n *net) Close() {
	if !n.closed {
		n.closed = true
		n.vm.Close()
	}
}
