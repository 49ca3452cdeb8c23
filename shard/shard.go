package shard

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
)

// MaxBytes is the largest encoded shard (DESIGN.md §3): 256 KiB.
const MaxBytes = 256 << 10

// headerMax bounds the largest header of any codec, so that a shard of
// MaxElems dense values plus its header still fits in MaxBytes.
const headerMax = 32

// MaxElems is how many float32 values one shard carries.
const MaxElems = (MaxBytes - headerMax) / 4

var (
	// ErrCorrupt reports bytes that are not a valid shard.
	ErrCorrupt = errors.New("shard: corrupt")
	// ErrLayout reports shards that do not fit the architecture they are
	// joined into.
	ErrLayout = errors.New("shard: layout")
)

// Tensor is one named tensor of a model: its element count is what the
// shard layout needs.
type Tensor struct {
	Name string
	Len  int
}

// Span locates one shard: elements [Offset, Offset+Len) of tensor Tensor.
type Span struct {
	Tensor int
	Offset int
	Len    int
}

// Plan cuts each tensor into shards of at most maxElems values (0 means
// MaxElems). Shards never span two tensors.
func Plan(tensors []Tensor, maxElems int) ([]Span, error) {
	if maxElems <= 0 {
		maxElems = MaxElems
	}
	if maxElems > MaxElems {
		return nil, fmt.Errorf("%w: %d values per shard exceeds %d", ErrLayout, maxElems, MaxElems)
	}
	var spans []Span
	for i, t := range tensors {
		if t.Len <= 0 {
			return nil, fmt.Errorf("%w: tensor %q has %d values", ErrLayout, t.Name, t.Len)
		}
		for off := 0; off < t.Len; off += maxElems {
			spans = append(spans, Span{Tensor: i, Offset: off, Len: min(maxElems, t.Len-off)})
		}
	}
	return spans, nil
}

// Split cuts a parameter vector laid out as tensors (in order) into the
// value slices of plan's spans. The slices alias params.
func Split(tensors []Tensor, params []float32, plan []Span) ([][]float32, error) {
	starts, total := offsets(tensors)
	if len(params) != total {
		return nil, fmt.Errorf("%w: %d values for tensors totalling %d", ErrLayout, len(params), total)
	}
	out := make([][]float32, len(plan))
	for i, s := range plan {
		if err := checkSpan(tensors, s); err != nil {
			return nil, err
		}
		start := starts[s.Tensor] + s.Offset
		out[i] = params[start : start+s.Len]
	}
	return out, nil
}

// Join reassembles a parameter vector from decoded shard values. Every value
// of every tensor must be covered exactly once.
func Join(tensors []Tensor, plan []Span, values [][]float32) ([]float32, error) {
	if len(plan) != len(values) {
		return nil, fmt.Errorf("%w: %d spans, %d shards", ErrLayout, len(plan), len(values))
	}
	starts, total, err := Place(tensors, plan)
	if err != nil {
		return nil, err
	}
	out := make([]float32, total)
	for i, s := range plan {
		if len(values[i]) != s.Len {
			return nil, fmt.Errorf("%w: shard %d has %d values, its span %d", ErrLayout, i, len(values[i]), s.Len)
		}
		copy(out[starts[i]:], values[i])
	}
	return out, nil
}

// Place checks that plan covers every value of tensors exactly once and
// returns where each span starts in the flat vector, and its length, so a
// caller can decode shards straight into place (DecodeInto).
func Place(tensors []Tensor, plan []Span) (starts []int, total int, err error) {
	tstarts, total := offsets(tensors)
	starts = make([]int, len(plan))
	order := make([]int, len(plan))
	for i, s := range plan {
		if err := checkSpan(tensors, s); err != nil {
			return nil, 0, err
		}
		starts[i], order[i] = tstarts[s.Tensor]+s.Offset, i
	}
	// Coverage on intervals, not per value: sorted by start, each span must
	// begin where the previous one ended.
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(starts[a], starts[b]) })
	next := 0
	for _, i := range order {
		switch {
		case starts[i] < next:
			return nil, 0, fmt.Errorf("%w: shard %d overlaps another", ErrLayout, i)
		case starts[i] > next:
			return nil, 0, fmt.Errorf("%w: values %d..%d are in no shard", ErrLayout, next, starts[i]-1)
		}
		next = starts[i] + plan[i].Len
	}
	if next != total {
		return nil, 0, fmt.Errorf("%w: values %d..%d are in no shard", ErrLayout, next, total-1)
	}
	return starts, total, nil
}

func offsets(tensors []Tensor) (starts []int, total int) {
	starts = make([]int, len(tensors))
	for i, t := range tensors {
		starts[i] = total
		total += t.Len
	}
	return starts, total
}

func checkSpan(tensors []Tensor, s Span) error {
	if s.Tensor < 0 || s.Tensor >= len(tensors) || s.Offset < 0 || s.Len <= 0 || s.Len > MaxElems ||
		s.Offset > tensors[s.Tensor].Len-s.Len {
		return fmt.Errorf("%w: span %+v outside its tensor", ErrLayout, s)
	}
	return nil
}
