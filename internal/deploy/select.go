package deploy

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/deploy/plan"
	"github.com/oaas/pm/internal/fault"
)

// Automatic environment selection (upstream-head-delta §5): a deployment
// that names no target_envs is placed on clusters PM picks from its
// available_envs (every configured cluster when empty). PM asks each
// candidate for its health, keeps those that answer with a usable
// availability and are not unhealthy, and orders them healthy before
// degraded, more available first, then by name, so that the choice is
// the same on every PM. It selects the fewest of the best whose replica
// plan meets the availability target with one replica per cluster (so
// 2f+1 clusters for a STRONG class), all of them when no fewer do.
// (OaaS sizes the count over the worst candidates instead, which selects
// more clusters than the target needs whenever a poor one is among the
// candidates.) Re-planning a deployment that was placed
// this way keeps its clusters while they are all still eligible and the
// count needed moved by no more than the hysteresis margin, as replica
// re-plans do.

// Selection says how a deployment's clusters were chosen.
type Selection struct {
	// Auto is set when PM selected them (target_envs empty).
	Auto bool
	// Candidates are the clusters it selected from, in available_envs
	// order (or by name); Eligible those that qualified, best first.
	Candidates, Eligible []string
	// Kept is set when a re-plan kept the clusters the deployment had.
	Kept bool
}

// probe is one cluster's answer to "how available are you".
type probe struct {
	name string
	in   plan.Cluster
	rank int
	err  error
}

// probeAll asks clusters for their availability, in parallel.
func (s *Service) probeAll(ctx context.Context, names []string) []probe {
	out := make([]probe, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			out[i].name = name
			sig, err := s.cl.Signals(ctx, name)
			if err != nil {
				out[i].err = fault.Wrap(fault.Unavailable, err, "cannot read its availability: %v", err)
				return
			}
			out[i].in, out[i].rank, out[i].err = clusterInput(name, sig)
		})
	}
	wg.Wait()
	return out
}

// candidates are the clusters automatic selection may use: the configured
// ones available_envs names, in its order (unknown names are skipped, as
// OaaS does: an allow-list may name clusters of other installations), or
// every configured cluster by name.
func (s *Service) candidates(spec *pmv1.OClassDeployment) ([]string, error) {
	known := s.cl.Names()
	if len(known) == 0 {
		return nil, fault.New(fault.Unavailable, "no cluster is configured to deploy to")
	}
	if len(spec.GetAvailableEnvs()) == 0 {
		return known, nil
	}
	var out []string
	for _, e := range spec.GetAvailableEnvs() {
		if s.cl.Has(e) && !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil, fault.Invalidf("available_envs: none of %s is a configured cluster (known: %s)",
			quoteAll(spec.GetAvailableEnvs()), strings.Join(known, ", "))
	}
	return out, nil
}

// selectClusters picks a deployment's clusters (see the top of this file)
// and returns them with their planner inputs and placement order. current
// are the clusters an earlier plan selected (nil for a new deployment).
func (s *Service) selectClusters(ctx context.Context, spec *pmv1.OClassDeployment, strong bool, current []string) ([]plan.Cluster, []string, Selection, error) {
	cands, err := s.candidates(spec)
	if err != nil {
		return nil, nil, Selection{}, err
	}
	sel := Selection{Auto: true, Candidates: cands}
	probes := s.probeAll(ctx, cands)
	var eligible []probe
	var why []string
	for _, p := range probes {
		switch {
		case p.err != nil:
			why = append(why, fmt.Sprintf("%q (%v)", p.name, p.err))
		case p.rank > 1:
			why = append(why, fmt.Sprintf("%q (not healthy)", p.name))
		default:
			eligible = append(eligible, p)
		}
	}
	if len(eligible) == 0 {
		return nil, nil, sel, fault.New(fault.Unavailable, "no eligible cluster for automatic selection among %s: %s",
			strings.Join(cands, ", "), strings.Join(why, "; "))
	}
	slices.SortStableFunc(eligible, func(a, b probe) int {
		return cmp.Or(cmp.Compare(a.rank, b.rank), cmp.Compare(b.in.Availability, a.in.Availability), cmp.Compare(a.name, b.name))
	})
	inputs := make([]plan.Cluster, len(eligible))
	for i, p := range eligible {
		inputs[i] = p.in
		sel.Eligible = append(sel.Eligible, p.name)
	}
	// The fewest of the best clusters whose plan needs no more replicas
	// than clusters, so that each replica can have a cluster (a failure
	// domain) of its own; all of them when no such prefix exists.
	n := len(eligible)
	target := targetOf(spec, s.cfg.Deploy.DefaultAvailability)
	for k := 1; k < len(eligible); k++ {
		pl, err := s.plan(target, inputs[:k], strong, 0)
		if err != nil {
			return nil, nil, sel, err
		}
		if pl.Replicas <= k {
			n = k
			break
		}
	}
	chosen := eligible[:n]
	if len(current) > 0 && abs(len(current)-n) <= max(s.cfg.Deploy.HysteresisMargin, 0) {
		var kept []probe
		for _, c := range current {
			if i := slices.IndexFunc(eligible, func(p probe) bool { return p.name == c }); i >= 0 {
				kept = append(kept, eligible[i])
			}
		}
		if len(kept) == len(current) {
			chosen, sel.Kept = kept, true
		}
	}
	slices.SortStableFunc(chosen, func(a, b probe) int { return cmp.Or(cmp.Compare(a.rank, b.rank), cmp.Compare(a.name, b.name)) })
	out := make([]plan.Cluster, len(chosen))
	ordered := make([]string, len(chosen))
	for i, p := range chosen {
		out[i], ordered[i] = p.in, p.name
	}
	return out, ordered, sel, nil
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
