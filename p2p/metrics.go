package p2p

import (
	"github.com/ipfs/boxo/bitswap"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the p2p layer's Prometheus series, registered on a registry
// the caller owns (nothing global).
type Metrics struct {
	messages *prometheus.CounterVec
	bytesIn  *prometheus.CounterVec
	sizes    *prometheus.HistogramVec
	dropped  *prometheus.CounterVec
}

// NewMetrics registers the series on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "murmur", Subsystem: "p2p", Name: "gossip_messages_total",
			Help: "Gossip messages validated, by topic and verdict."}, []string{"topic", "verdict"}),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "murmur", Subsystem: "p2p", Name: "gossip_bytes_total",
			Help: "Gossip payload bytes validated, by topic."}, []string{"topic"}),
		sizes: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "murmur", Subsystem: "p2p", Name: "gossip_message_bytes",
			Help: "Gossip payload sizes.", Buckets: prometheus.ExponentialBuckets(64, 4, 6)}, []string{"topic"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "murmur", Subsystem: "p2p", Name: "gossip_dropped_total",
			Help: "Gossip dropped unjudged: RPCs to a peer whose queue was full (outbound_queue), received messages the validators had no room for (validation_queue), accepted messages a local reader was too slow for (slow_subscriber)."}, []string{"reason"}),
	}
	for _, c := range []prometheus.Collector{m.messages, m.bytesIn, m.sizes, m.dropped} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) message(topic string, v Verdict, n int) {
	if m == nil {
		return
	}
	verdict := map[Verdict]string{Accept: "accept", Reject: "reject", Ignore: "ignore"}[v]
	m.messages.WithLabelValues(topic, verdict).Inc()
	m.bytesIn.WithLabelValues(topic).Add(float64(n))
	m.sizes.WithLabelValues(topic).Observe(float64(n))
}

func (m *Metrics) drop(reason string) {
	if m == nil {
		return
	}
	m.dropped.WithLabelValues(reason).Inc()
}

// WatchHost exports the host's connected peer count and its traffic (from
// the bandwidth counter NewHost installs with WithBandwidth).
func (m *Metrics) WatchHost(reg prometheus.Registerer, h host.Host, bw *metrics.BandwidthCounter) error {
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "murmur", Subsystem: "p2p", Name: "peers",
			Help: "Connected peers."}, func() float64 { return float64(len(h.Network().Peers())) }),
	}
	if bw != nil {
		cs = append(cs,
			prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "murmur", Subsystem: "p2p", Name: "bytes_in_total",
				Help: "Bytes received over all connections."}, func() float64 { return float64(bw.GetBandwidthTotals().TotalIn) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "murmur", Subsystem: "p2p", Name: "bytes_out_total",
				Help: "Bytes sent over all connections."}, func() float64 { return float64(bw.GetBandwidthTotals().TotalOut) }))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// WatchBitswap exports bitswap's block and byte counts.
func (m *Metrics) WatchBitswap(reg prometheus.Registerer, bs *bitswap.Bitswap) error {
	stat := func(f func(*bitswap.Stat) float64) func() float64 {
		return func() float64 {
			s, err := bs.Stat()
			if err != nil {
				return 0
			}
			return f(s)
		}
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "murmur", Subsystem: "bitswap", Name: "blocks_received_total",
			Help: "Blocks received over bitswap."}, stat(func(s *bitswap.Stat) float64 { return float64(s.BlocksReceived) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "murmur", Subsystem: "bitswap", Name: "blocks_sent_total",
			Help: "Blocks sent over bitswap."}, stat(func(s *bitswap.Stat) float64 { return float64(s.BlocksSent) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "murmur", Subsystem: "bitswap", Name: "duplicate_blocks_total",
			Help: "Blocks received more than once."}, stat(func(s *bitswap.Stat) float64 { return float64(s.DupBlksReceived) })),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
