package learner

import (
	"errors"
	"fmt"
	"math"
)

// ErrPrivacy reports invalid privacy parameters or an exhausted budget.
var ErrPrivacy = errors.New("privacy")

// DefaultOrders are the Rényi orders Opacus's RDPAccountant uses:
// 1.1, 1.2, …, 10.9 and 12, 13, …, 63.
func DefaultOrders() []float64 {
	orders := make([]float64, 0, 99+52)
	for x := 1; x < 100; x++ {
		orders = append(orders, 1+float64(x)/10)
	}
	for a := 12; a < 64; a++ {
		orders = append(orders, float64(a))
	}
	return orders
}

// RDP returns, for each order α, the Rényi DP of steps compositions of the
// sampled Gaussian mechanism with sampling rate q and noise multiplier sigma
// (Mironov, Talwar and Zhang 2019), computed as Opacus and TF-Privacy do.
func RDP(q, sigma float64, steps int, orders []float64) ([]float64, error) {
	if q < 0 || q > 1 || math.IsNaN(q) {
		return nil, fmt.Errorf("%w: sample rate %v must be in [0,1]", ErrPrivacy, q)
	}
	if sigma < 0 || math.IsNaN(sigma) {
		return nil, fmt.Errorf("%w: noise multiplier %v must be ≥ 0", ErrPrivacy, sigma)
	}
	if steps < 0 {
		return nil, fmt.Errorf("%w: %d steps", ErrPrivacy, steps)
	}
	out := make([]float64, len(orders))
	for i, a := range orders {
		if !(a > 1) {
			return nil, fmt.Errorf("%w: Rényi order %v must be > 1", ErrPrivacy, a)
		}
		out[i] = rdpSampledGaussian(q, sigma, a) * float64(steps)
	}
	return out, nil
}

func rdpSampledGaussian(q, sigma, alpha float64) float64 {
	switch {
	case q == 0:
		return 0
	case sigma == 0:
		return math.Inf(1)
	case q == 1:
		return alpha / (2 * sigma * sigma)
	case math.IsInf(alpha, 1):
		return math.Inf(1)
	}
	if alpha == math.Trunc(alpha) {
		return logAInt(q, sigma, int(alpha)) / (alpha - 1)
	}
	return logAFrac(q, sigma, alpha) / (alpha - 1)
}

// logAInt is log A_α for integer α: a finite binomial expansion.
func logAInt(q, sigma float64, alpha int) float64 {
	logA := math.Inf(-1)
	for i := 0; i <= alpha; i++ {
		fi := float64(i)
		logCoef := logBinomAbs(float64(alpha), fi) + fi*math.Log(q) + float64(alpha-i)*math.Log(1-q)
		logA = logAdd(logA, logCoef+(fi*fi-fi)/(2*sigma*sigma))
	}
	return logA
}

// logAFrac is log A_α for fractional α: two infinite series, summed until
// their terms fall below e^-30.
func logAFrac(q, sigma, alpha float64) float64 {
	logA0, logA1 := math.Inf(-1), math.Inf(-1)
	z0 := sigma*sigma*math.Log(1/q-1) + 0.5
	for i := 0.0; ; i++ {
		coefSign := binomSign(alpha, i)
		logCoef := logBinomAbs(alpha, i)
		j := alpha - i
		logT0 := logCoef + i*math.Log(q) + j*math.Log(1-q)
		logT1 := logCoef + j*math.Log(q) + i*math.Log(1-q)
		logE0 := math.Log(0.5) + logErfc((i-z0)/(math.Sqrt2*sigma))
		logE1 := math.Log(0.5) + logErfc((z0-j)/(math.Sqrt2*sigma))
		logS0 := logT0 + (i*i-i)/(2*sigma*sigma) + logE0
		logS1 := logT1 + (j*j-j)/(2*sigma*sigma) + logE1
		if coefSign > 0 {
			logA0 = logAdd(logA0, logS0)
			logA1 = logAdd(logA1, logS1)
		} else {
			logA0 = logSub(logA0, logS0)
			logA1 = logSub(logA1, logS1)
		}
		if math.Max(logS0, logS1) < -30 {
			break
		}
	}
	return logAdd(logA0, logA1)
}

// logBinomAbs is log |C(a, k)| for real a and integer k ≥ 0.
func logBinomAbs(a, k float64) float64 {
	la, _ := math.Lgamma(a + 1)
	lk, _ := math.Lgamma(k + 1)
	lak, _ := math.Lgamma(a - k + 1)
	return la - lk - lak
}

// binomSign is the sign of the generalised binomial coefficient C(a, k).
func binomSign(a, k float64) int {
	_, s1 := math.Lgamma(a + 1)
	_, s2 := math.Lgamma(a - k + 1)
	return s1 * s2
}

func logAdd(x, y float64) float64 {
	a, b := math.Min(x, y), math.Max(x, y)
	if math.IsInf(a, -1) {
		return b
	}
	return math.Log1p(math.Exp(a-b)) + b
}

func logSub(x, y float64) float64 {
	switch {
	case x < y:
		panic("learner: logSub of a larger number (the RDP series lost monotonicity)")
	case math.IsInf(y, -1):
		return x
	case x == y:
		return math.Inf(-1)
	}
	d := math.Expm1(x - y)
	if math.IsInf(d, 1) {
		return x
	}
	return math.Log(d) + y
}

// logErfc is log(erfc(x)), with the asymptotic series where erfc underflows.
func logErfc(x float64) float64 {
	if x < 20 {
		return math.Log(math.Erfc(x))
	}
	x2 := x * x
	return -math.Log(math.Pi)/2 - math.Log(x) - x2 - 0.5/x2 + 0.625/(x2*x2) - 37.0/24/(x2*x2*x2) + 353.0/64/(x2*x2*x2*x2)
}

// EpsilonFromRDP converts RDP at the given orders to (ε, δ)-DP with the
// conversion of Balle et al. 2020 (as Opacus does) and returns the smallest
// ε and the order that attains it.
func EpsilonFromRDP(orders, rdp []float64, delta float64) (eps, order float64, err error) {
	if len(orders) != len(rdp) || len(orders) == 0 {
		return 0, 0, fmt.Errorf("%w: %d orders for %d RDP values", ErrPrivacy, len(orders), len(rdp))
	}
	if !(delta > 0 && delta < 1) {
		return 0, 0, fmt.Errorf("%w: δ %v must be in (0,1)", ErrPrivacy, delta)
	}
	eps, order = math.Inf(1), math.NaN()
	for i, a := range orders {
		e := rdp[i] - (math.Log(delta)+math.Log(a))/(a-1) + math.Log((a-1)/a)
		if !math.IsNaN(e) && e < eps {
			eps, order = e, a
		}
	}
	return eps, order, nil
}

// Accountant composes sampled Gaussian mechanisms and reports ε.
type Accountant struct {
	orders []float64
	rdp    []float64
}

// NewAccountant starts an empty ledger over DefaultOrders.
func NewAccountant() *Accountant {
	o := DefaultOrders()
	return &Accountant{orders: o, rdp: make([]float64, len(o))}
}

// Step records steps runs of the sampled Gaussian mechanism.
func (a *Accountant) Step(sigma, q float64, steps int) error {
	r, err := RDP(q, sigma, steps, a.orders)
	if err != nil {
		return err
	}
	for i := range a.rdp {
		a.rdp[i] += r[i]
	}
	return nil
}

// Epsilon is the ε spent so far at the given δ.
func (a *Accountant) Epsilon(delta float64) (float64, error) {
	eps, _, err := EpsilonFromRDP(a.orders, a.rdp, delta)
	return eps, err
}

// clone copies the ledger (for what-if questions).
func (a *Accountant) clone() *Accountant {
	return &Accountant{orders: a.orders, rdp: append([]float64(nil), a.rdp...)}
}

// Epsilon is the ε of steps runs of the sampled Gaussian mechanism.
func Epsilon(sigma, q float64, steps int, delta float64) (float64, error) {
	a := NewAccountant()
	if err := a.Step(sigma, q, steps); err != nil {
		return 0, err
	}
	return a.Epsilon(delta)
}

// NoiseMultiplier finds the smallest noise multiplier (to within the
// tolerance on ε that Opacus's get_noise_multiplier uses, 0.01) whose ε after
// steps runs at rate q is at most target.
func NoiseMultiplier(target, delta, q float64, steps int) (float64, error) {
	const tolerance, maxSigma = 0.01, 1e6
	if !(target > 0) {
		return 0, fmt.Errorf("%w: target ε %v must be > 0", ErrPrivacy, target)
	}
	lo, hi, epsHi := 0.0, 10.0, math.Inf(1)
	for epsHi > target {
		hi *= 2
		if hi > maxSigma {
			return 0, fmt.Errorf("%w: ε=%v is out of reach at δ=%v (noise multiplier would exceed %g)", ErrPrivacy, target, delta, maxSigma)
		}
		e, err := Epsilon(hi, q, steps, delta)
		if err != nil {
			return 0, err
		}
		epsHi = e
	}
	for target-epsHi > tolerance {
		mid := (lo + hi) / 2
		e, err := Epsilon(mid, q, steps, delta)
		if err != nil {
			return 0, err
		}
		if e < target {
			hi, epsHi = mid, e
		} else {
			lo = mid
		}
	}
	return hi, nil
}
