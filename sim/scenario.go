package sim

import (
	"fmt"

	"github.com/murmur-ml/murmur/daemon"
	"github.com/murmur-ml/murmur/learner"
)

// Scenario is a scenario file (TOML): settings that override the command
// line's, and the network with its timeline of faults.
//
//	name = "partition"
//	rounds = 6
//	partition = "iid"
//	[network]
//	latency_ms = 5
//	[[network.event]]
//	at = 2            # when height 2 is committed
//	action = "partition"
//	peers = [7]
type Scenario struct {
	Name        string   `toml:"name"`
	Description string   `toml:"description"`
	Peers       *int     `toml:"peers"`
	Rounds      *int     `toml:"rounds"`
	Byzantine   *int     `toml:"byzantine"`
	Attack      *string  `toml:"attack"`
	Aggregator  *string  `toml:"aggregator"`
	Partition   *string  `toml:"partition"`
	Model       *string  `toml:"model"`
	Seed        *uint64  `toml:"seed"`
	LocalEpochs *int     `toml:"local_epochs"`
	LocalSteps  *int     `toml:"local_steps"`
	LR          *float64 `toml:"lr"`
	DPSigma     *float64 `toml:"dp_sigma"`
	DPClip      *float64 `toml:"dp_clip"`
	DPBudget    *float64 `toml:"dp_budget"`
	DPMode      *string  `toml:"dp_mode"` // update (default) or sample (DP-SGD)
	Network     Network  `toml:"network"`
}

// LoadScenario reads a scenario file; unknown keys are errors.
func LoadScenario(path string) (Scenario, error) {
	var s Scenario
	if err := daemon.DecodeTOMLFile(path, &s); err != nil {
		return s, fmt.Errorf("%w: %w", ErrScenario, err)
	}
	return s, nil
}

// Apply sets the scenario's overrides on cfg.
func (s Scenario) Apply(cfg *Config) error {
	set := func(dst *int, v *int) {
		if v != nil {
			*dst = *v
		}
	}
	set(&cfg.Peers, s.Peers)
	set(&cfg.Rounds, s.Rounds)
	set(&cfg.Byzantine, s.Byzantine)
	if s.LocalEpochs != nil {
		cfg.Train.Epochs, cfg.Train.Steps = *s.LocalEpochs, 0
	}
	set(&cfg.Train.Steps, s.LocalSteps)
	if s.LR != nil {
		cfg.Train.LR = *s.LR
	}
	if s.Seed != nil {
		cfg.Seed = *s.Seed
	}
	if s.Model != nil {
		cfg.Model = *s.Model
	}
	if s.Attack != nil {
		a, err := learner.ParseAttack(*s.Attack)
		if err != nil {
			return fmt.Errorf("%w: attack: %w", ErrScenario, err)
		}
		cfg.Attack = a
	}
	if s.Aggregator != nil {
		cfg.Agg = learner.AggConfig{Rule: *s.Aggregator}
	}
	if s.Partition != nil {
		p, err := learner.ParsePartition(*s.Partition)
		if err != nil {
			return fmt.Errorf("%w: partition: %w", ErrScenario, err)
		}
		cfg.Partition = p
	}
	if s.DPSigma != nil {
		cfg.DP = &DP{Mode: DPUpdate, Sigma: *s.DPSigma, Clip: 1}
		if s.DPClip != nil {
			cfg.DP.Clip = *s.DPClip
		}
		if s.DPBudget != nil {
			cfg.DP.Budget = *s.DPBudget
		}
		if s.DPMode != nil {
			cfg.DP.Mode = *s.DPMode
		}
	} else if s.DPClip != nil || s.DPBudget != nil || s.DPMode != nil {
		return fmt.Errorf("%w: dp_clip, dp_budget and dp_mode need dp_sigma", ErrScenario)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	return s.Network.Validate(cfg.Peers)
}
