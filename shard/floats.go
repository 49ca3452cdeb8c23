package shard

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// littleEndian is true on the machines murmur runs on (amd64, arm64): there
// a float32 slice already is its little-endian encoding, and dense shards
// are a memory copy instead of a conversion per value.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// appendFloats appends the little-endian bytes of v to b.
func appendFloats(b []byte, v []float32) []byte {
	if littleEndian && len(v) > 0 {
		return append(b, unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))...)
	}
	return appendFloatsPortable(b, v)
}

// appendFloatsPortable is appendFloats for any byte order.
func appendFloatsPortable(b []byte, v []float32) []byte {
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

// readFloats fills dst from len(dst)·4 little-endian bytes of src.
func readFloats(dst []float32, src []byte) {
	if littleEndian && len(dst) > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*len(dst)), src)
		return
	}
	readFloatsPortable(dst, src)
}

// readFloatsPortable is readFloats for any byte order.
func readFloatsPortable(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}
