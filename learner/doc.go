// Package learner owns everything about learning that a peer does on its own
// data: reading MNIST (IDX files), a seeded synthetic dataset for fast tests,
// partitioning a training set across peers (iid, Dirichlet label skew,
// label-sorted shards), the gorgonia models (the FedAvg paper's 2NN and a small
// CNN), local training and evaluation, the aggregation rules (weighted mean,
// coordinate-wise median, trimmed mean, Multi-Krum, centered clipping, norm
// bounding), differential privacy (L2 clipping, Gaussian noise, a Rényi-DP
// accountant and a per-peer budget) and the attacks the simulator and tests use.
//
// How it is driven: callers hand it data, an explicit *rand.Rand and a Config;
// nothing here reads the clock or global randomness, so the same seed yields
// the same weights. A model is a flat []float32 parameter vector plus its
// architecture (Arch): the gorgonia graph views the vector in place, so a
// trained model can be stored, sharded and aggregated without conversion.
//
// Aggregation is the one place where bit-identical results across peers are a
// contract (DESIGN.md §2): every rule sorts its inputs by ID, accumulates in
// float64 in that fixed order, never reduces in parallel, and rounds once to
// float32 with an explicit conversion.
package learner
