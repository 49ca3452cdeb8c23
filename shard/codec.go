package shard

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
)

// Version is the shard format version, the first byte of every shard.
const Version = 1

// Codec names how a shard's values are encoded (the second byte).
type Codec byte

const (
	Dense Codec = 1 // float32 little-endian
	Int8  Codec = 2 // affine int8: x ≈ scale·(q − zero)
	TopK  Codec = 3 // sparse: k (index, float32) pairs, indices delta-varint
)

// String is the codec's name as configs and `peer inspect` spell it.
func (c Codec) String() string {
	switch c {
	case Dense:
		return "dense"
	case Int8:
		return "int8"
	case TopK:
		return "topk"
	}
	return fmt.Sprintf("codec(%d)", byte(c))
}

// ParseCodec reads a codec name.
func ParseCodec(s string) (Codec, error) {
	for _, c := range []Codec{Dense, Int8, TopK} {
		if c.String() == s {
			return c, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown codec %q (want dense, int8 or topk)", ErrCorrupt, s)
}

// Header is what Decode learned about a shard besides its values.
type Header struct {
	Codec Codec
	Len   int     // number of values (dense length, also for TopK)
	K     int     // TopK: values actually carried
	Scale float32 // Int8
	Zero  int8    // Int8
}

// Encode writes values with the codec. For TopK, k (≥ 1) values of largest
// magnitude are kept (ties broken by lower index); the others are zero after
// decoding. It fails only if the result would exceed MaxBytes.
func Encode(c Codec, values []float32, k int) ([]byte, error) {
	n := len(values)
	if n == 0 || n > MaxElems {
		return nil, fmt.Errorf("%w: %d values (want 1..%d)", ErrLayout, n, MaxElems)
	}
	b := make([]byte, 0, headerMax+4*n)
	b = append(b, Version, byte(c))
	b = binary.AppendUvarint(b, uint64(n))
	switch c {
	case Dense:
		b = appendFloats(b, values)
	case Int8:
		scale, zero := int8Params(values)
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(scale))
		b = append(b, byte(zero))
		for _, v := range values {
			b = append(b, byte(quantize(v, scale, zero)))
		}
	case TopK:
		if k < 1 {
			return nil, fmt.Errorf("%w: top-k with k=%d", ErrLayout, k)
		}
		idx := topK(values, min(k, n))
		b = binary.AppendUvarint(b, uint64(len(idx)))
		prev := -1
		for _, i := range idx {
			b = binary.AppendUvarint(b, uint64(i-prev-1))
			prev = i
		}
		for _, i := range idx {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(values[i]))
		}
	default:
		return nil, fmt.Errorf("%w: unknown codec %d", ErrLayout, byte(c))
	}
	if len(b) > MaxBytes {
		return nil, fmt.Errorf("%w: encoded shard is %d bytes, limit %d", ErrLayout, len(b), MaxBytes)
	}
	return b, nil
}

// int8Params maps [min, max] (widened to include 0, so that zero is exact)
// onto [-128, 127].
func int8Params(values []float32) (scale float32, zero int8) {
	lo, hi := float32(0), float32(0)
	for _, v := range values {
		lo, hi = min(lo, v), max(hi, v)
	}
	s := (float64(hi) - float64(lo)) / 255
	if s < math.SmallestNonzeroFloat32*256 { // constant or subnormal: all zero
		return 1, 0
	}
	scale = float32(min(s, math.MaxFloat32))
	z := math.Round(-128 - float64(lo)/float64(scale))
	return scale, int8(max(-128, min(127, z)))
}

func quantize(v, scale float32, zero int8) int8 {
	q := math.Round(float64(v)/float64(scale)) + float64(zero)
	return int8(max(-128, min(127, q)))
}

// topK returns the indices of the k largest |values|, ascending; ties go
// to the lower index, and NaN ranks below every number (what a stable sort
// by descending magnitude would keep). It selects the k-th magnitude in
// linear expected time instead of sorting: this runs on every top-k update
// a trainer stores.
func topK(values []float32, k int) []int {
	if k <= 0 {
		return []int{}
	}
	keys := make([]float32, len(values))
	for i, v := range values {
		keys[i] = magnitude(v)
	}
	t := kthLargest(slices.Clone(keys), k)
	above := 0
	for _, m := range keys {
		if m > t {
			above++
		}
	}
	ties := k - above // how many at exactly t, lowest indices first
	idx := make([]int, 0, k)
	for i, m := range keys {
		switch {
		case m > t:
			idx = append(idx, i)
		case m == t && ties > 0:
			idx = append(idx, i)
			ties--
		}
	}
	return idx
}

// magnitude is |v|, with NaN below every number.
func magnitude(v float32) float32 {
	if v != v {
		return -1
	}
	return float32(math.Abs(float64(v)))
}

// kthLargest returns the k-th largest of xs (1-based), reordering xs: a
// quickselect with median-of-three pivots and three-way partitions (so
// runs of equal values cost nothing).
func kthLargest(xs []float32, k int) float32 {
	lo, hi, want := 0, len(xs)-1, k-1 // want: index in descending order
	for lo < hi {
		mid := lo + (hi-lo)/2
		a, b, c := xs[lo], xs[mid], xs[hi]
		p := max(min(a, b), min(max(a, b), c))
		// Three-way partition into > p | == p | < p.
		gt, i, lt := lo, lo, hi
		for i <= lt {
			switch {
			case xs[i] > p:
				xs[gt], xs[i] = xs[i], xs[gt]
				gt++
				i++
			case xs[i] < p:
				xs[i], xs[lt] = xs[lt], xs[i]
				lt--
			default:
				i++
			}
		}
		switch {
		case want < gt:
			hi = gt - 1
		case want > lt:
			lo = lt + 1
		default:
			return p
		}
	}
	return xs[want]
}

// Decode parses a shard. Every length is checked against the bytes present
// before anything is allocated, so a hostile header cannot make it allocate
// more than a small multiple of len(b); it never panics.
func Decode(b []byte) ([]float32, Header, error) {
	return decode(b, nil)
}

// DecodeInto parses a shard into dst, which must hold exactly its values
// (the span the manifest gives it): no allocation for the values.
func DecodeInto(dst []float32, b []byte) (Header, error) {
	if dst == nil {
		dst = []float32{}
	}
	_, h, err := decode(b, dst)
	return h, err
}

// decode writes into dst when it is not nil (checking its length), else
// into a new slice.
func decode(b []byte, dst []float32) ([]float32, Header, error) {
	var h Header
	if len(b) > MaxBytes {
		return nil, h, fmt.Errorf("%w: %d bytes exceeds %d", ErrCorrupt, len(b), MaxBytes)
	}
	if len(b) < 3 {
		return nil, h, fmt.Errorf("%w: %d bytes is shorter than a header", ErrCorrupt, len(b))
	}
	if b[0] != Version {
		return nil, h, fmt.Errorf("%w: format version %d, want %d", ErrCorrupt, b[0], Version)
	}
	h.Codec = Codec(b[1])
	n, w := uvarint(b[2:])
	if w <= 0 || n == 0 || n > MaxElems {
		return nil, h, fmt.Errorf("%w: value count %d", ErrCorrupt, n)
	}
	h.Len = int(n)
	rest := b[2+w:]
	if dst != nil && len(dst) != h.Len {
		return nil, h, fmt.Errorf("%w: shard holds %d values, its place %d", ErrCorrupt, h.Len, len(dst))
	}
	// The values' slice, allocated only once the payload size is checked.
	alloc := func() []float32 {
		if dst != nil {
			return dst
		}
		return make([]float32, h.Len)
	}
	switch h.Codec {
	case Dense:
		if len(rest) != 4*h.Len {
			return nil, h, fmt.Errorf("%w: dense shard of %d values has %d payload bytes", ErrCorrupt, h.Len, len(rest))
		}
		out := alloc()
		readFloats(out, rest)
		return out, h, nil
	case Int8:
		if len(rest) != 5+h.Len {
			return nil, h, fmt.Errorf("%w: int8 shard of %d values has %d payload bytes", ErrCorrupt, h.Len, len(rest))
		}
		h.Scale = math.Float32frombits(binary.LittleEndian.Uint32(rest))
		h.Zero = int8(rest[4])
		if !(h.Scale > 0) || math.IsInf(float64(h.Scale), 0) {
			return nil, h, fmt.Errorf("%w: int8 scale %v", ErrCorrupt, h.Scale)
		}
		out := alloc()
		for i, q := range rest[5:] {
			out[i] = h.Scale * float32(int(int8(q))-int(h.Zero))
		}
		return out, h, nil
	case TopK:
		k, w := uvarint(rest)
		// Each carried value takes ≥ 1 index byte and 4 value bytes.
		if w <= 0 || k == 0 || k > n || k > uint64(len(rest))/5 {
			return nil, h, fmt.Errorf("%w: top-k count %d for %d values in %d bytes", ErrCorrupt, k, n, len(rest))
		}
		h.K = int(k)
		rest = rest[w:]
		idx := make([]int, h.K)
		prev := -1
		for i := range idx {
			gap, w := uvarint(rest)
			if w <= 0 || gap >= n || uint64(prev+1)+gap >= n {
				return nil, h, fmt.Errorf("%w: top-k index %d out of range", ErrCorrupt, i)
			}
			prev += 1 + int(gap)
			idx[i] = prev
			rest = rest[w:]
		}
		if len(rest) != 4*h.K {
			return nil, h, fmt.Errorf("%w: top-k shard has %d value bytes for %d values", ErrCorrupt, len(rest), h.K)
		}
		out := alloc()
		clear(out) // values not carried are zero
		for i, j := range idx {
			out[j] = math.Float32frombits(binary.LittleEndian.Uint32(rest[4*i:]))
		}
		return out, h, nil
	}
	return nil, h, fmt.Errorf("%w: unknown codec %d", ErrCorrupt, byte(h.Codec))
}

// Residual is a trainer's error-feedback memory for top-k compression
// (Stich et al. 2018): what was dropped from one update is added to the
// next, so nothing is lost, only delayed. It is per peer and never sent.
type Residual struct {
	mem []float32
}

// Compensate returns delta plus the remembered residual: the vector to
// compress this round.
func (r *Residual) Compensate(delta []float32) []float32 {
	if len(r.mem) != len(delta) {
		r.mem = make([]float32, len(delta))
	}
	out := make([]float32, len(delta))
	for i := range out {
		out[i] = delta[i] + r.mem[i]
	}
	return out
}

// Remember stores what compression dropped: compensated − sent.
func (r *Residual) Remember(compensated, sent []float32) {
	if len(compensated) != len(sent) {
		panic("shard: Residual.Remember of vectors of different length")
	}
	if len(r.mem) != len(sent) {
		r.mem = make([]float32, len(sent))
	}
	for i := range r.mem {
		r.mem[i] = compensated[i] - sent[i]
	}
}

// uvarint reads a varint and refuses overlong encodings, so that one value
// has exactly one encoding and equal shards have equal CIDs.
func uvarint(b []byte) (uint64, int) {
	v, w := binary.Uvarint(b)
	if w > 0 && w != len(binary.AppendUvarint(nil, v)) {
		return 0, -1
	}
	return v, w
}
