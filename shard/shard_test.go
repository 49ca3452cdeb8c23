package shard

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// mlp2NN is the learner's 2NN layout (784-200-200-10).
var mlp2NN = []Tensor{{"fc1.weight", 156800}, {"fc1.bias", 200}, {"fc2.weight", 40000}, {"fc2.bias", 200}, {"fc3.weight", 2000}, {"fc3.bias", 10}}

func randVec(n int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 0))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * 0.05)
	}
	return v
}

func TestPlanSplitJoin(t *testing.T) {
	plan, err := Plan(mlp2NN, 0)
	if err != nil {
		t.Fatal(err)
	}
	// fc1.weight (627,200 bytes) needs 3 shards; every other tensor one.
	if len(plan) != 8 {
		t.Fatalf("%d shards: %+v", len(plan), plan)
	}
	params := randVec(199210, 1)
	parts, err := Split(mlp2NN, params, plan)
	if err != nil {
		t.Fatal(err)
	}
	values := make([][]float32, len(parts))
	for i, p := range parts {
		b, err := Encode(Dense, p, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > MaxBytes {
			t.Fatalf("shard %d is %d bytes", i, len(b))
		}
		if values[i], _, err = Decode(b); err != nil {
			t.Fatal(err)
		}
	}
	back, err := Join(mlp2NN, plan, values)
	if err != nil || !slices.Equal(back, params) {
		t.Fatalf("join: %v", err)
	}
	// Layout errors.
	if _, err := Join(mlp2NN, plan[1:], values[1:]); !errors.Is(err, ErrLayout) {
		t.Errorf("missing shard: %v", err)
	}
	dup := slices.Clone(plan)
	dup[1] = dup[0]
	if _, err := Join(mlp2NN, dup, values); !errors.Is(err, ErrLayout) {
		t.Errorf("overlap: %v", err)
	}
	if _, err := Split(mlp2NN, params[1:], plan); !errors.Is(err, ErrLayout) {
		t.Errorf("short vector: %v", err)
	}
	if _, err := Plan([]Tensor{{"x", 0}}, 0); !errors.Is(err, ErrLayout) {
		t.Errorf("empty tensor: %v", err)
	}
}

func TestCodecs(t *testing.T) {
	v := randVec(50000, 2)
	dense, _ := Encode(Dense, v, 0)
	norm := l2(v)
	tests := []struct {
		codec    Codec
		k        int
		maxBytes int     // relative to dense
		maxErr   float64 // relative L2 reconstruction error
	}{
		{Dense, 0, len(dense), 0},
		{Int8, 0, len(dense)/4 + 16, 0.02},
		{TopK, 500, len(dense)/50 + 16, 1},
	}
	for _, tc := range tests {
		b, err := Encode(tc.codec, v, tc.k)
		if err != nil {
			t.Fatal(err)
		}
		got, h, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if h.Codec != tc.codec || h.Len != len(v) || len(got) != len(v) {
			t.Fatalf("%v: header %+v", tc.codec, h)
		}
		diff := make([]float32, len(v))
		for i := range v {
			diff[i] = got[i] - v[i]
		}
		rel := l2(diff) / norm
		t.Logf("%-5v %7d bytes (%.3f× dense), relative error %.4f", tc.codec, len(b), float64(len(b))/float64(len(dense)), rel)
		if len(b) > tc.maxBytes || rel > tc.maxErr {
			t.Errorf("%v: %d bytes (limit %d), error %.4f (limit %.4f)", tc.codec, len(b), tc.maxBytes, rel, tc.maxErr)
		}
	}
	// Top-k keeps exactly the largest magnitudes.
	b, _ := Encode(TopK, []float32{0.1, -5, 0.2, 3, 0}, 2)
	got, h, _ := Decode(b)
	if h.K != 2 || !slices.Equal(got, []float32{0, -5, 0, 3, 0}) {
		t.Fatalf("top-2 of 5: %v %+v", got, h)
	}
	// Int8 represents zero exactly and survives a constant shard.
	b, _ = Encode(Int8, []float32{0, 0, 0}, 0)
	if got, _, err := Decode(b); err != nil || !slices.Equal(got, []float32{0, 0, 0}) {
		t.Fatalf("int8 zeros: %v %v", got, err)
	}
}

func TestResidualLosesNothing(t *testing.T) {
	var r Residual
	total := make([]float32, 1000)
	sent := make([]float32, 1000)
	for round := range 50 {
		d := randVec(1000, uint64(round))
		for i := range d {
			total[i] += d[i]
		}
		c := r.Compensate(d)
		b, _ := Encode(TopK, c, 20)
		s, _, _ := Decode(b)
		r.Remember(c, s)
		for i := range s {
			sent[i] += s[i]
		}
	}
	// Everything not sent yet is in the residual: sent + residual = total.
	for i := range total {
		if math.Abs(float64(sent[i]+r.mem[i]-total[i])) > 1e-4 {
			t.Fatalf("coordinate %d: sent %v + residual %v ≠ total %v", i, sent[i], r.mem[i], total[i])
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	good, _ := Encode(Dense, []float32{1, 2}, 0)
	topk, _ := Encode(TopK, []float32{1, 2, 3}, 2)
	tests := map[string][]byte{
		"empty":           nil,
		"short":           {Version, byte(Dense)},
		"version":         append([]byte{9}, good[1:]...),
		"codec":           append([]byte{Version, 77}, good[2:]...),
		"truncated":       good[:len(good)-1],
		"trailing":        append(slices.Clone(good), 0),
		"huge count":      {Version, byte(Dense), 0xff, 0xff, 0xff, 0xff, 0x0f},
		"zero count":      {Version, byte(Dense), 0},
		"topk k > n":      {Version, byte(TopK), 1, 5, 0, 0, 0, 0, 0},
		"topk index oob":  {Version, byte(TopK), 2, 1, 5, 0, 0, 0, 0},
		"topk truncated":  topk[:len(topk)-2],
		"int8 scale zero": {Version, byte(Int8), 1, 0, 0, 0, 0, 0, 0},
		"oversized":       make([]byte, MaxBytes+1),
	}
	for name, b := range tests {
		if _, _, err := Decode(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
	if _, err := Encode(Dense, make([]float32, MaxElems+1), 0); err == nil {
		t.Error("oversized encode accepted")
	}
}

func l2(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

func FuzzDecode(f *testing.F) {
	for _, c := range []Codec{Dense, Int8, TopK} {
		b, _ := Encode(c, []float32{1, -2, 3.5, 0}, 2)
		f.Add(b)
	}
	f.Add([]byte{Version, byte(TopK), 0xff, 0xff, 0x03, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, h, err := Decode(b)
		if err != nil {
			return
		}
		if len(v) != h.Len || h.Len > MaxElems {
			t.Fatalf("%d values, header %+v", len(v), h)
		}
		// Whatever decodes re-encodes to a shard that decodes to the same
		// values (dense and top-k exactly; int8 is lossy only once).
		if h.Codec == Dense {
			again, _ := Encode(Dense, v, 0)
			if !bytes.Equal(again, b) {
				t.Fatalf("dense shard does not re-encode to itself")
			}
		}
	})
}

func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8}, uint8(1), uint16(1))
	f.Fuzz(func(t *testing.T, raw []byte, codec uint8, k uint16) {
		n := len(raw) / 4
		if n == 0 {
			return
		}
		v := make([]float32, n)
		for i := range v {
			x := math.Float32frombits(uint32(raw[4*i]) | uint32(raw[4*i+1])<<8 | uint32(raw[4*i+2])<<16 | uint32(raw[4*i+3])<<24)
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) || math.Abs(float64(x)) > 1e30 {
				x = 0
			}
			v[i] = x
		}
		c := []Codec{Dense, Int8, TopK}[int(codec)%3]
		b, err := Encode(c, v, int(k)%n+1)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := Decode(b)
		if err != nil {
			t.Fatalf("%v: own encoding refused: %v", c, err)
		}
		if c == Dense && !slices.Equal(got, v) {
			t.Fatal("dense round trip changed values")
		}
	})
}

func TestDecodeIntoAndPlace(t *testing.T) {
	plan, _ := Plan(mlp2NN, 0)
	params := randVec(199210, 3)
	parts, _ := Split(mlp2NN, params, plan)
	starts, total, err := Place(mlp2NN, plan)
	if err != nil || total != len(params) {
		t.Fatal(total, err)
	}
	out := make([]float32, total)
	for i, p := range parts {
		b, _ := Encode(Dense, p, 0)
		if _, err := DecodeInto(out[starts[i]:starts[i]+plan[i].Len], b); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(out, params) {
		t.Fatal("decoded in place differs")
	}
	b, _ := Encode(Dense, parts[0], 0)
	if _, err := DecodeInto(make([]float32, 3), b); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("wrong-sized destination: %v", err)
	}
	tk, _ := Encode(TopK, []float32{0, 5, 0}, 1)
	dst := []float32{9, 9, 9}
	if _, err := DecodeInto(dst, tk); err != nil || !slices.Equal(dst, []float32{0, 5, 0}) {
		t.Fatalf("top-k into a dirty slice: %v %v", dst, err)
	}
}

// TestFloatsPortable checks the fast (memory copy) and portable
// (per-value) paths agree.
func TestFloatsPortable(t *testing.T) {
	v := randVec(1001, 9)
	fast := appendFloats(nil, v)
	slow := appendFloatsPortable(nil, v)
	back, backSlow := make([]float32, len(v)), make([]float32, len(v))
	readFloats(back, fast)
	readFloatsPortable(backSlow, fast)
	if !bytes.Equal(fast, slow) || !slices.Equal(back, v) || !slices.Equal(backSlow, v) {
		t.Fatal("fast and portable float encodings differ")
	}
}
