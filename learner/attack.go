package learner

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
)

// Attack names, as the CLI spells them.
const (
	AttackNone      = "none"
	AttackSignFlip  = "sign-flip"  // send −s·Δ of one's own honest update
	AttackScale     = "scale"      // send λ·Δ: boosting (model replacement)
	AttackNoise     = "noise"      // send pure Gaussian noise
	AttackLabelFlip = "label-flip" // data poisoning: train on labels 9−y
	AttackALIE      = "alie"       // "a little is enough" (Baruch et al. 2019)
	AttackIPM       = "ipm"        // inner-product manipulation (Xie et al. 2020)
)

// Attacks lists every attack name (without "none").
var Attacks = []string{AttackSignFlip, AttackScale, AttackNoise, AttackLabelFlip, AttackALIE, AttackIPM}

// Attack is a Byzantine peer's behaviour with its strength. The zero
// Strength picks the default documented for each attack.
type Attack struct {
	Name string
	// Strength is s for sign-flip (default 4, as in Li et al. 2019's RSA
	// experiments), λ for scale (default 100), the per-coordinate standard
	// deviation for noise (default 0.1), z for ALIE (default from n and f as
	// in the paper) and ε for IPM (default 0.5).
	Strength float64
}

// ParseAttack validates an attack name ("" and "none" mean no attack).
func ParseAttack(name string) (Attack, error) {
	if name == "" || name == AttackNone {
		return Attack{Name: AttackNone}, nil
	}
	if !slices.Contains(Attacks, name) {
		return Attack{}, fmt.Errorf("%w: unknown attack %q (want %s)", ErrConfig, name, strings.Join(Attacks, ", "))
	}
	return Attack{Name: name}, nil
}

// NeedsOwnTraining reports whether the attacker must train on its own
// (possibly poisoned) data to forge its update.
func (a Attack) NeedsOwnTraining() bool {
	switch a.Name {
	case AttackSignFlip, AttackScale, AttackLabelFlip:
		return true
	}
	return false
}

// Omniscient reports whether the attack uses the honest peers' updates of
// the round (ALIE and IPM assume colluding attackers that see them).
func (a Attack) Omniscient() bool { return a.Name == AttackALIE || a.Name == AttackIPM }

// Poison returns the dataset the attacker trains on: labels flipped to 9−y
// for label-flip, the data itself otherwise.
func (a Attack) Poison(d *Dataset) *Dataset {
	if a.Name != AttackLabelFlip {
		return d
	}
	out := &Dataset{Rows: d.Rows, Cols: d.Cols, Pixels: d.Pixels, Labels: make([]uint8, len(d.Labels))}
	for i, l := range d.Labels {
		out.Labels[i] = NumClasses - 1 - l
	}
	return out
}

// Forge returns the update the attacker sends. own is its own trained update
// (nil if NeedsOwnTraining is false), honest the honest updates of the round
// (used only by omniscient attacks), n the number of participants and f the
// number of attackers among them.
func (a Attack) Forge(own []float32, honest [][]float32, dim, n, f int, rng *rand.Rand) []float32 {
	out := make([]float32, dim)
	switch a.Name {
	case AttackSignFlip:
		s := cmpOr(a.Strength, 4)
		for i, v := range own {
			out[i] = float32(-s * float64(v))
		}
	case AttackScale:
		l := cmpOr(a.Strength, 100)
		for i, v := range own {
			out[i] = float32(l * float64(v))
		}
	case AttackNoise:
		std := cmpOr(a.Strength, 0.1)
		for i := range out {
			out[i] = float32(std * rng.NormFloat64())
		}
	case AttackALIE:
		z := a.Strength
		if z == 0 {
			// s = ⌊n/2+1⌋ − f workers must be "won over"; z = Φ⁻¹((n−s)/n).
			s := n/2 + 1 - f
			z = math.Sqrt2 * math.Erfinv(2*float64(n-s)/float64(n)-1)
		}
		mu, sd := meanStd(honest, dim)
		for i := range out {
			out[i] = float32(mu[i] - z*sd[i])
		}
	case AttackIPM:
		eps := cmpOr(a.Strength, 0.5)
		mu, _ := meanStd(honest, dim)
		for i := range out {
			out[i] = float32(-eps * mu[i])
		}
	default: // none, label-flip: the (poisoned) update itself
		copy(out, own)
	}
	return out
}

func cmpOr(v, def float64) float64 {
	if v == 0 {
		return def
	}
	return v
}

// meanStd is the coordinate-wise mean and (population) standard deviation.
func meanStd(xs [][]float32, dim int) (mu, sd []float64) {
	mu, sd = make([]float64, dim), make([]float64, dim)
	if len(xs) == 0 {
		return mu, sd
	}
	for _, x := range xs {
		for i, v := range x {
			mu[i] += float64(v)
		}
	}
	for i := range mu {
		mu[i] /= float64(len(xs))
	}
	for _, x := range xs {
		for i, v := range x {
			d := float64(v) - mu[i]
			sd[i] += d * d
		}
	}
	for i := range sd {
		sd[i] = math.Sqrt(sd[i] / float64(len(xs)))
	}
	return mu, sd
}
