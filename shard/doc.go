// Package shard turns a model's flat parameter vector into shards and back,
// and encodes the values of a shard with a versioned codec.
//
// A shard is a contiguous slice of one tensor (never spanning two layers, so
// that unchanged layers produce unchanged shards and dedupe across rounds),
// encoded as at most MaxBytes bytes: a header (format version, codec, element
// count and the codec's parameters) and a little-endian payload. Codecs:
//
//   - Dense: float32 values as they are (checkpoints and exact updates).
//   - Int8: affine quantisation with a per-shard scale and zero point.
//   - TopK: the k largest-magnitude values, indices delta-varint coded.
//     Error feedback (keeping what was not sent and adding it to the next
//     update) lives in Residual, which each peer keeps locally.
//
// It is pure (DESIGN.md §2): no goroutines, clocks, I/O, context or global
// randomness. Decode bounds every length by the input's size before it
// allocates and never panics on any input; fuzz targets check both.
package shard
