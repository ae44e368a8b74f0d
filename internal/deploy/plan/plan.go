// Package plan sizes a deployment's replica count from the availability of
// the clusters it targets (reference design, "Availability-driven replica
// sizing"). It is pure arithmetic: no I/O, no clocks, no logging, so the
// deployment service can call it for real rollouts and for dry runs alike and
// tests can pin its results on hand-computed vectors.
package plan

import (
	"cmp"
	"math"
	"slices"
	"strings"

	"github.com/oaas/pm/internal/fault"
)

// Algorithm selects how the availability of a set of replicas is computed.
type Algorithm string

const (
	// Quorum counts the deployment as up when a strict majority of its
	// replicas is up; this is what stateful classes need and the default.
	Quorum Algorithm = "quorum"
	// Independent counts it as up when any replica is up (A = 1 - Π(1-p)).
	// The reference design keeps it for comparison and stateless classes.
	Independent Algorithm = "independent"
)

// DefaultTarget is the availability aimed for when the deployment names none.
const DefaultTarget = 0.99

// DefaultCap is the replica count never exceeded while chasing a target, so a
// target no cluster set can reach does not ask CRMs for unbounded replicas.
const DefaultCap = 50

// epsilon absorbs float error, so that a target such as 0.99 is met by an
// availability that is 0.99 on paper (1-(0.1)^2 evaluates to 0.9899999...).
const epsilon = 1e-12

// Source values of Cluster.Source and of Availability's second result.
const (
	sourceCRM        = "crm"
	sourceReadyNodes = "ready_nodes"
)

// ParseAlgorithm reads an algorithm name as configured by an operator
// (DEPLOY_REPLICA_ALGORITHM): case and surrounding space do not matter, and
// the empty string means the default, Quorum.
func ParseAlgorithm(s string) (Algorithm, error) {
	switch Algorithm(strings.ToLower(strings.TrimSpace(s))) {
	case "", Quorum:
		return Quorum, nil
	case Independent:
		return Independent, nil
	default:
		return "", fault.Invalidf("unknown replica algorithm %q (want %q or %q)", s, Quorum, Independent)
	}
}

// Cluster is one target cluster as the planner sees it.
type Cluster struct {
	// Name identifies the cluster; it breaks ties between equal availabilities
	// so that a plan does not depend on the order clusters were listed in.
	Name string
	// Availability is the probability that a replica on this cluster is up.
	// Values outside [0,1] are clamped (NaN counts as 0).
	Availability float64
	// Source says where Availability came from: "crm" (reported by the CRM)
	// or "ready_nodes" (ready_nodes / node_count). It is carried through for
	// the inspection API, not used in the arithmetic.
	Source string
}

// Input is what a plan is computed from. Zero values select the defaults, so
// callers only fill in what the deployment and configuration specify.
type Input struct {
	// Target is the availability to reach; 0 means DefaultTarget.
	Target float64
	// Clusters must be non-empty.
	Clusters []Cluster
	// Algorithm is "" for Quorum.
	Algorithm Algorithm
	// Cap is the largest replica count considered; 0 means DefaultCap.
	Cap int
	// Strong is set when the class's state needs STRONG consistency, which
	// requires a quorum that survives at least one failure (2f+1, f ≥ 1).
	Strong bool
	// Previous is the replica count of the deployment's existing plan, 0 when
	// there is none.
	Previous int
	// Margin is the hysteresis margin: a new replica count within Margin of
	// Previous keeps Previous, so small availability wobbles do not rescale
	// every function of the deployment.
	Margin int
}

// Plan is the outcome of Compute, kept on the deployment's status so that
// operators can see why it got the replicas it got.
type Plan struct {
	// Replicas is the chosen replica count (≥ 1).
	Replicas int
	// Achieved is the availability Replicas reaches under Algorithm.
	Achieved float64
	// Target is the availability aimed for (after defaulting).
	Target float64
	// Algorithm is the algorithm used (after defaulting).
	Algorithm Algorithm
	// Ordered are the clusters worst → best availability, ties by name, with
	// availabilities clamped. Replica i runs on Ordered[i mod len(Ordered)].
	Ordered []Cluster
	// CapHit is set when the target is not reachable within the cap.
	CapHit bool
	// Kept is set when hysteresis kept Previous instead of the new count.
	Kept bool
}

// Compute chooses the smallest replica count whose availability meets the
// target, placing replicas on the worst clusters first and cycling through
// them, then applies the strong-consistency minimum and hysteresis.
//
// Placing worst first makes the count a conservative bound: whatever cluster a
// scheduler actually picks for a replica is at least as available as the one
// assumed here.
func Compute(in Input) (Plan, error) {
	target := in.Target
	if target == 0 {
		target = DefaultTarget
	}
	if math.IsNaN(target) || target <= 0 || target > 1 {
		return Plan{}, fault.Invalidf("target availability %v is outside (0, 1]", in.Target)
	}
	if len(in.Clusters) == 0 {
		return Plan{}, fault.Invalidf("no target clusters to plan replicas for")
	}
	algo := in.Algorithm
	if algo == "" {
		algo = Quorum
	}
	if algo != Quorum && algo != Independent {
		return Plan{}, fault.Invalidf("unknown replica algorithm %q (want %q or %q)", in.Algorithm, Quorum, Independent)
	}
	capR := in.Cap
	if capR == 0 {
		capR = DefaultCap
	}
	if capR < 1 {
		return Plan{}, fault.Invalidf("replica cap %d is below 1", in.Cap)
	}

	ordered := make([]Cluster, len(in.Clusters))
	for i, c := range in.Clusters {
		c.Availability = clamp(c.Availability)
		ordered[i] = c
	}
	slices.SortStableFunc(ordered, func(a, b Cluster) int {
		if c := cmp.Compare(a.Availability, b.Availability); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})

	p := Plan{Target: target, Algorithm: algo, Ordered: ordered}
	p.Replicas, p.Achieved = smallest(ordered, algo, target, capR)
	if p.Replicas == 0 {
		p.Replicas, p.CapHit = capR, true
	}
	if in.Strong {
		// The count is deliberately allowed above a cap below 3: the cap
		// guards against runaway counts, while fewer than 3 replicas would
		// silently break the consistency the class asked for.
		p.Replicas = strongMinimum(p.Replicas)
	}
	if in.Previous > 0 && abs(p.Replicas-in.Previous) <= max(in.Margin, 0) &&
		in.Previous <= capR && (!in.Strong || in.Previous >= 3) {
		p.Replicas, p.Kept = in.Previous, true
	}
	p.Achieved = availabilityOf(ordered, algo, p.Replicas)
	return p, nil
}

// smallest returns the first replica count in 1..capR whose availability
// reaches target, and that availability; 0 when none does. It grows the
// distribution incrementally, so the whole search costs O(capR²).
func smallest(ordered []Cluster, algo Algorithm, target float64, capR int) (int, float64) {
	// dist[k] = P(exactly k of the first r replicas are up).
	dist := make([]float64, 1, capR+1)
	dist[0] = 1
	allDown := 1.0
	for r := 1; r <= capR; r++ {
		pr := ordered[(r-1)%len(ordered)].Availability
		var a float64
		if algo == Independent {
			allDown *= 1 - pr
			a = 1 - allDown
		} else {
			dist = addReplica(dist, pr)
			a = majority(dist)
		}
		if a+epsilon >= target {
			return r, a
		}
	}
	return 0, 0
}

// strongMinimum raises r to 2f+1 with f = max((r-1)/2, 1): a strongly
// consistent quorum must tolerate at least one failure (1 and 2 become 3; 4
// already tolerates one and stays 4).
func strongMinimum(r int) int {
	f := max((r-1)/2, 1)
	return max(r, 2*f+1)
}

// availabilityOf is the availability of the first r replicas placed on
// ordered (worst first, cycling).
func availabilityOf(ordered []Cluster, algo Algorithm, r int) float64 {
	ps := make([]float64, r)
	for i := range ps {
		ps[i] = ordered[i%len(ordered)].Availability
	}
	if algo == Independent {
		return IndependentAvailability(ps)
	}
	return QuorumAvailability(ps)
}

// QuorumAvailability is the probability that a strict majority of replicas
// is up, replica i being up independently with probability ps[i]. With an even
// count a tie is not a majority, so two replicas need both up. It runs a
// dynamic program over the number of replicas up (O(n²)) instead of
// enumerating the 2ⁿ up/down states. No replicas means never available.
func QuorumAvailability(ps []float64) float64 {
	dist := make([]float64, 1, len(ps)+1)
	dist[0] = 1
	for _, p := range ps {
		dist = addReplica(dist, clamp(p))
	}
	return majority(dist)
}

// IndependentAvailability is the probability that at least one replica is
// up: 1 - Π(1-p_i). No replicas means never available.
func IndependentAvailability(ps []float64) float64 {
	allDown := 1.0
	for _, p := range ps {
		allDown *= 1 - clamp(p)
	}
	return 1 - allDown
}

// Availability turns a CRM's health report into a cluster availability: the
// CRM's own value when it reports one, else the share of ready nodes. A
// cluster reporting neither (or zero nodes) gives an error rather than a
// guess, because a made-up availability would silently mis-size the
// deployment. The second result is the source, "crm" or "ready_nodes".
func Availability(crmAvailability *float64, nodeCount, readyNodes *uint32) (float64, string, error) {
	if crmAvailability != nil && !math.IsNaN(*crmAvailability) {
		return clamp(*crmAvailability), sourceCRM, nil
	}
	if nodeCount == nil || *nodeCount == 0 {
		return 0, "", fault.Invalidf("cluster reports no availability and no node count")
	}
	if readyNodes == nil {
		return 0, "", fault.Invalidf("cluster reports no availability and no ready node count")
	}
	return clamp(float64(*readyNodes) / float64(*nodeCount)), sourceReadyNodes, nil
}

// addReplica extends dist (P(k up) over n replicas) by one replica that is up
// with probability p, returning the distribution over n+1 replicas.
func addReplica(dist []float64, p float64) []float64 {
	dist = append(dist, 0)
	for k := len(dist) - 1; k >= 1; k-- {
		dist[k] = dist[k]*(1-p) + dist[k-1]*p
	}
	dist[0] *= 1 - p
	return dist
}

// majority sums P(k up) over strict majorities k > n/2 of n = len(dist)-1.
func majority(dist []float64) float64 {
	n := len(dist) - 1
	if n == 0 {
		return 0
	}
	var a float64
	for k := n/2 + 1; k <= n; k++ {
		a += dist[k]
	}
	return min(a, 1)
}

// clamp maps p into [0,1]; NaN counts as 0, the pessimistic reading.
func clamp(p float64) float64 {
	switch {
	case math.IsNaN(p) || p < 0:
		return 0
	case p > 1:
		return 1
	default:
		return p
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
