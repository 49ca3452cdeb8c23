package node

import (
	"slices"
	"testing"
)

func TestBackoffRepublishes(t *testing.T) {
	tests := []struct {
		base int
		want []int // ticks at which it fires, within the first 100
	}{
		{0, nil},
		{5, []int{5, 15, 35, 75}},                // gaps 5, 10, 20, 40 (the cap)
		{2, []int{2, 6, 14, 30, 46, 62, 78, 94}}, // gaps 2, 4, 8, 16, then 16
	}
	for _, tc := range tests {
		var b backoff
		b.reset(tc.base)
		var got []int
		for tick := 1; tick <= 100; tick++ {
			if b.due() {
				got = append(got, tick)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("base %d: fired at %v, want %v", tc.base, got, tc.want)
		}
	}
	var zero backoff
	if zero.due() {
		t.Error("a backoff never reset fired")
	}
}
