package p2p

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/libp2p/go-libp2p/core/host"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
)

func TestRange(t *testing.T) {
	ctx := context.Background()
	a, b := connectedPair(t)
	items := [][]byte{[]byte("one"), []byte("two"), bytes.Repeat([]byte{7}, 100_000)}
	ServeRange(a, "t", func(from uint64, n int) [][]byte {
		if from >= uint64(len(items)) {
			return nil
		}
		return items[from:min(len(items), int(from)+n)]
	})
	for _, tc := range []struct {
		from uint64
		n    int
		want int
	}{{0, 3, 3}, {1, 1, 1}, {1, 10, 2}, {5, 4, 0}} {
		got, err := FetchRange(ctx, b, a.ID(), "t", tc.from, tc.n)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != tc.want {
			t.Fatalf("from %d n %d: %d items, want %d", tc.from, tc.n, len(got), tc.want)
		}
		for i, g := range got {
			if !bytes.Equal(g, items[int(tc.from)+i]) {
				t.Fatalf("item %d differs", i)
			}
		}
	}
	if _, err := FetchRange(ctx, b, a.ID(), "t", 0, MaxRangeItems+1); err == nil {
		t.Fatal("an oversized request was sent")
	}
	// Another network's protocol is not served.
	if _, err := FetchRange(ctx, b, a.ID(), "other", 0, 1); err == nil {
		t.Fatal(fmt.Sprint("a request on another network's protocol was answered"))
	}
}

// FuzzReadRange: any response bytes decode to at most n items or an
// ErrRange error, never a panic or an allocation beyond the bound; what
// decodes accounts for no more bytes than the input holds.
func FuzzReadRange(f *testing.F) {
	f.Add([]byte{3, 'o', 'n', 'e', 0}, 4)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, 1)
	f.Add([]byte{5, 'a'}, 2)
	f.Fuzz(func(t *testing.T, data []byte, n int) {
		n = 1 + (n%MaxRangeItems+MaxRangeItems)%MaxRangeItems
		items, err := ReadRange(bufio.NewReader(bytes.NewReader(data)), n)
		if err != nil && !errors.Is(err, ErrRange) {
			t.Fatalf("error %v is not ErrRange", err)
		}
		if len(items) > n {
			t.Fatalf("%d items for a bound of %d", len(items), n)
		}
		used := 0
		for _, it := range items {
			used += len(binary.AppendUvarint(nil, uint64(len(it)))) + len(it)
		}
		if used > len(data) {
			t.Fatalf("%d items of %d bytes from %d input bytes", len(items), used, len(data))
		}
	})
}

// connectedPair is two connected in-memory hosts, closed with the test.
func connectedPair(t *testing.T) (host.Host, host.Host) {
	t.Helper()
	mn, err := mocknet.FullMeshConnected(2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mn.Close() })
	return mn.Hosts()[0], mn.Hosts()[1]
}
