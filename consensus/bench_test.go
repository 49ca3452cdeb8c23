package consensus

import (
	"crypto/ed25519"
	"fmt"
	"testing"
	"time"
)

// plainVerifier verifies every signature every time (no cache): what each
// validator pays when every message reaches it directly.
type plainVerifier map[string]ed25519.PublicKey

func (v plainVerifier) Verify(id string, msg, sig []byte) bool {
	pub, ok := v[id]
	return ok && len(sig) == ed25519.SignatureSize && ed25519.Verify(pub, msg, sig)
}

// BenchmarkHeight runs 4, 16 and 64 validators in process, with real
// ed25519 signing and verification of every message, over a direct
// (all-to-all, lossless) network, and reports wall time, messages per
// decided height and messages per height divided by n².
func BenchmarkHeight(b *testing.B) {
	const heights = 3
	for _, n := range []int{4, 16, 64} {
		b.Run(fmt.Sprintf("validators=%d", n), func(b *testing.B) {
			var msgs int
			var elapsed time.Duration
			for i := 0; i < b.N; i++ {
				net := newTestNet(b, n, uint64(i+1), nil)
				net.relay = false
				pv := plainVerifier(net.ver.keys)
				net.cfg.TimeoutPropose, net.cfg.TimeoutDelta = 50, 5
				for _, nd := range net.nodes {
					nd.m, _ = New(net.cfg, nd.signer, pv, validValue)
					nd.m.Start()
				}
				start := time.Now()
				net.run(heights, 100000)
				elapsed += time.Since(start)
				if !net.allDecided(heights) {
					b.Fatalf("%d validators did not decide %d heights", n, heights)
				}
				msgs += net.messages
			}
			perHeight := float64(msgs) / float64(b.N*heights)
			b.ReportMetric(float64(elapsed.Milliseconds())/float64(b.N*heights), "ms/height")
			b.ReportMetric(perHeight, "msgs/height")
			b.ReportMetric(perHeight/float64(n*n), "msgs/height/n²")
		})
	}
}
