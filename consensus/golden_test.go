package consensus

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden transcripts in testdata/")

// TestGoldenTranscripts replays small scenarios and compares what every
// validator decided (height, round, value) and how many messages crossed the
// network with testdata/*.golden: any change to the protocol's behaviour
// shows up as a diff to review (go test -run Golden -update rewrites them).
func TestGoldenTranscripts(t *testing.T) {
	scenarios := []struct {
		name string
		run  func() *testNet
	}{
		{"honest-4", func() *testNet {
			net := newTestNet(t, 4, 11, nil)
			net.run(3, 1000)
			return net
		}},
		{"silent-proposer", func() *testNet {
			// v01 proposes at height 1 round 0 and never speaks.
			net := newTestNet(t, 4, 12, map[int]int{1: silent})
			net.run(3, 2000)
			return net
		}},
		{"equivocator", func() *testNet {
			net := newTestNet(t, 4, 13, map[int]int{3: equivocate})
			net.run(3, 2000)
			return net
		}},
		{"partition-heal", func() *testNet {
			net := newTestNet(t, 4, 14, nil)
			net.cut = func(a, b int) bool { return a/2 != b/2 }
			net.run(3, 100)
			net.cut = nil
			net.run(3, 3000)
			return net
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			net := sc.run()
			var b strings.Builder
			fmt.Fprintf(&b, "scenario %s: %d messages, %d ticks\n", sc.name, net.messages, net.now)
			for _, nd := range net.nodes {
				fmt.Fprintf(&b, "%s behaviour=%d evidence=%d:", nd.id, nd.behavior, len(net.evidence[nd.id]))
				for _, c := range nd.decided {
					fmt.Fprintf(&b, " %d/%d=%s", c.Certificate.Height, c.Certificate.Round, c.Certificate.Value)
				}
				b.WriteString("\n")
			}
			path := filepath.Join("testdata", sc.name+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if string(want) != b.String() {
				t.Fatalf("transcript changed:\n--- want\n%s--- got\n%s", want, b.String())
			}
		})
	}
}
