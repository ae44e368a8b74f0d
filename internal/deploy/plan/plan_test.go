package plan

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/oaas/pm/internal/fault"
)

const tol = 1e-9

func clusters(ps ...float64) []Cluster {
	cs := make([]Cluster, len(ps))
	for i, p := range ps {
		cs[i] = Cluster{Name: fmt.Sprintf("c%d", i), Availability: p, Source: "crm"}
	}
	return cs
}

func names(cs []Cluster) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name
	}
	return out
}

func TestCompute(t *testing.T) {
	tests := []struct {
		name     string
		in       Input
		replicas int
		achieved float64
		capHit   bool
		kept     bool
	}{
		// 3 × 0.9: R=1 0.9, R=2 0.81 (both up), R=3 0.9³+3·0.9²·0.1 = 0.972.
		{"three 0.9 reach 0.97 with 3", Input{Target: 0.97, Clusters: clusters(0.9, 0.9, 0.9)}, 3, 0.972, false, false},
		// R=4 needs 3 of 4: 0.9⁴+4·0.9³·0.1 = 0.9477; R=5 needs 3 of 5:
		// 0.59049+0.32805+0.0729 = 0.99144.
		{"three 0.9 reach 0.99 with 5", Input{Target: 0.99, Clusters: clusters(0.9, 0.9, 0.9)}, 5, 0.99144, false, false},
		{"default target is 0.99", Input{Clusters: clusters(0.9, 0.9, 0.9)}, 5, 0.99144, false, false},
		{"one 0.999 cluster needs one replica", Input{Clusters: clusters(0.999)}, 1, 0.999, false, false},
		{"target 1 with a perfect cluster", Input{Target: 1, Clusters: clusters(1)}, 1, 1, false, false},
		// 1 - 0.1² = 0.99 exactly on paper, 0.98999… in floats: the epsilon counts it.
		{"independent 0.9 reaches 0.99 with 2", Input{Algorithm: Independent, Clusters: clusters(0.9)}, 2, 0.99, false, false},
		{"independent 0.5 needs 7", Input{Algorithm: Independent, Clusters: clusters(0.5)}, 7, 1 - 1.0/128, false, false},
		{"strong raises 1 to 3", Input{Strong: true, Clusters: clusters(0.999)}, 3, 0.999*0.999*0.999 + 3*0.999*0.999*0.001, false, false},
		{"strong raises 2 to 3", Input{Strong: true, Algorithm: Independent, Clusters: clusters(0.9)}, 3, 0.999, false, false},
		{"strong keeps 5", Input{Strong: true, Clusters: clusters(0.9, 0.9, 0.9)}, 5, 0.99144, false, false},
		// 0.5 replicas never beat 0.5 under quorum: cap.
		{"cap hit", Input{Cap: 4, Clusters: clusters(0.5)}, 4, 0.3125, true, false},
		{"cap hit at default cap", Input{Clusters: clusters(0.3)}, DefaultCap, QuorumAvailability(slices.Repeat([]float64{0.3}, DefaultCap)), true, false},
		{"strong above a cap below 3", Input{Cap: 1, Strong: true, Clusters: clusters(0.999)}, 3, 0.999*0.999*0.999 + 3*0.999*0.999*0.001, false, false},
		// Hysteresis: the new count is 5.
		{"hysteresis keeps previous within margin", Input{Clusters: clusters(0.9, 0.9, 0.9), Previous: 4, Margin: 1}, 4, 0.9477, false, true},
		{"hysteresis keeps previous above", Input{Clusters: clusters(0.9, 0.9, 0.9), Previous: 7, Margin: 2}, 7, QuorumAvailability(slices.Repeat([]float64{0.9}, 7)), false, true},
		{"hysteresis replaces beyond margin", Input{Clusters: clusters(0.9, 0.9, 0.9), Previous: 3, Margin: 1}, 5, 0.99144, false, false},
		{"hysteresis margin 0 replaces", Input{Clusters: clusters(0.9, 0.9, 0.9), Previous: 4}, 5, 0.99144, false, false},
		{"hysteresis negative margin acts as 0", Input{Clusters: clusters(0.9, 0.9, 0.9), Previous: 4, Margin: -3}, 5, 0.99144, false, false},
		{"hysteresis same count is kept", Input{Clusters: clusters(0.9, 0.9, 0.9), Previous: 5}, 5, 0.99144, false, true},
		{"hysteresis respects cap", Input{Cap: 5, Clusters: clusters(0.9, 0.9, 0.9), Previous: 6, Margin: 2}, 5, 0.99144, false, false},
		{"hysteresis strong never keeps below 3", Input{Strong: true, Clusters: clusters(0.999), Previous: 2, Margin: 5}, 3, 0.999*0.999*0.999 + 3*0.999*0.999*0.001, false, false},
		{"hysteresis strong keeps 4", Input{Strong: true, Clusters: clusters(0.999), Previous: 4, Margin: 1}, 4, QuorumAvailability([]float64{0.999, 0.999, 0.999, 0.999}), false, true},
		{"hysteresis keeps previous although cap hit", Input{Cap: 4, Clusters: clusters(0.5), Previous: 3, Margin: 1}, 3, 0.5, true, true},
		// Clamping: 1.7 counts as 1, -2 as 0, NaN as 0.
		{"clamp above 1", Input{Clusters: clusters(1.7)}, 1, 1, false, false},
		{"clamp below 0 and NaN", Input{Cap: 3, Clusters: clusters(-2, math.NaN())}, 3, 0, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Compute(tt.in)
			if err != nil {
				t.Fatalf("Compute: %v", err)
			}
			if p.Replicas != tt.replicas || p.CapHit != tt.capHit || p.Kept != tt.kept {
				t.Fatalf("got replicas=%d capHit=%v kept=%v, want %d %v %v", p.Replicas, p.CapHit, p.Kept, tt.replicas, tt.capHit, tt.kept)
			}
			if math.Abs(p.Achieved-tt.achieved) > tol {
				t.Fatalf("achieved %.12f, want %.12f", p.Achieved, tt.achieved)
			}
			if p.Target == 0 || p.Algorithm == "" {
				t.Fatalf("defaults not filled in: %+v", p)
			}
			if len(p.Ordered) != len(tt.in.Clusters) {
				t.Fatalf("ordered has %d clusters, want %d", len(p.Ordered), len(tt.in.Clusters))
			}
		})
	}
}

func TestComputeTwoClustersWorstFirst(t *testing.T) {
	// Replicas alternate bad (0.9), good (0.99), bad, good, ...
	// R=1: 0.9. R=2: both up, 0.9·0.99 = 0.891.
	// R=3 (0.9, 0.99, 0.9): all up 0.8019; exactly two up
	// 0.9·0.99·0.1 + 0.9·0.01·0.9 + 0.1·0.99·0.9 = 0.1863; total 0.9882.
	// Best first (0.99, 0.9, 0.99) would give 0.99792 and stop at 3 for a
	// 0.99 target; worst first goes on: R=4 0.986337, R=5 0.9984384.
	tests := []struct {
		target   float64
		replicas int
		achieved float64
	}{
		{0.85, 1, 0.9},
		{0.98, 3, 0.9882},
		{0.99, 5, 0.9984384},
		{0.999, 7, 0.999778302},
	}
	for _, tt := range tests {
		in := Input{Target: tt.target, Clusters: []Cluster{
			{Name: "good", Availability: 0.99, Source: "crm"},
			{Name: "bad", Availability: 0.9, Source: "ready_nodes"},
		}}
		p, err := Compute(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := names(p.Ordered); !slices.Equal(got, []string{"bad", "good"}) {
			t.Fatalf("ordered %v, want worst first", got)
		}
		if p.Ordered[0].Source != "ready_nodes" {
			t.Fatalf("source not carried: %+v", p.Ordered[0])
		}
		if p.Replicas != tt.replicas || math.Abs(p.Achieved-tt.achieved) > tol {
			t.Errorf("target %v: %d replicas %.9f, want %d %.9f", tt.target, p.Replicas, p.Achieved, tt.replicas, tt.achieved)
		}
	}
}

func TestComputeOrderIsStableByName(t *testing.T) {
	a := []Cluster{{Name: "z", Availability: 0.9}, {Name: "a", Availability: 0.9}, {Name: "m", Availability: 0.5}}
	b := []Cluster{{Name: "a", Availability: 0.9}, {Name: "m", Availability: 0.5}, {Name: "z", Availability: 0.9}}
	pa, err := Compute(Input{Clusters: a})
	if err != nil {
		t.Fatal(err)
	}
	pb, err := Compute(Input{Clusters: b})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"m", "a", "z"}
	if !slices.Equal(names(pa.Ordered), want) || !slices.Equal(names(pb.Ordered), want) {
		t.Fatalf("orders %v and %v, want %v", names(pa.Ordered), names(pb.Ordered), want)
	}
	if a[0].Name != "z" {
		t.Fatal("Compute reordered the caller's slice")
	}
}

func TestComputeClampsOrdered(t *testing.T) {
	p, err := Compute(Input{Clusters: []Cluster{{Name: "x", Availability: 1.5}, {Name: "y", Availability: -0.5}}})
	if err != nil {
		t.Fatal(err)
	}
	if p.Ordered[0].Name != "y" || p.Ordered[0].Availability != 0 || p.Ordered[1].Availability != 1 {
		t.Fatalf("ordered %+v, want clamped y=0 then x=1", p.Ordered)
	}
}

func TestComputeErrors(t *testing.T) {
	tests := []struct {
		name string
		in   Input
	}{
		{"no clusters", Input{}},
		{"target above 1", Input{Target: 1.01, Clusters: clusters(0.9)}},
		{"negative target", Input{Target: -0.5, Clusters: clusters(0.9)}},
		{"NaN target", Input{Target: math.NaN(), Clusters: clusters(0.9)}},
		{"negative cap", Input{Cap: -1, Clusters: clusters(0.9)}},
		{"unknown algorithm", Input{Algorithm: "raft", Clusters: clusters(0.9)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compute(tt.in)
			if fault.KindOf(err) != fault.Invalid {
				t.Fatalf("err %v (kind %v), want Invalid", err, fault.KindOf(err))
			}
		})
	}
}

func TestParseAlgorithm(t *testing.T) {
	for in, want := range map[string]Algorithm{"": Quorum, "quorum": Quorum, " Quorum ": Quorum, "INDEPENDENT": Independent} {
		got, err := ParseAlgorithm(in)
		if err != nil || got != want {
			t.Errorf("ParseAlgorithm(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseAlgorithm("majority"); fault.KindOf(err) != fault.Invalid {
		t.Errorf("ParseAlgorithm(majority) err %v, want Invalid", err)
	}
}

func TestQuorumAvailability(t *testing.T) {
	tests := []struct {
		ps   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{0.7}, 0.7},
		{[]float64{0.9, 0.9}, 0.81}, // a tie is no majority: both must be up
		{[]float64{0.9, 0.9, 0.9}, 0.972},
		{[]float64{0.9, 0.9, 0.9, 0.9}, 0.9477},
		{[]float64{0.9, 0.9, 0.9, 0.9, 0.9}, 0.99144},
		{[]float64{1, 0}, 0},
		{[]float64{1, 1, 0}, 1},
		{[]float64{2, -1, 1}, 1}, // clamped
	}
	for _, tt := range tests {
		if got := QuorumAvailability(tt.ps); math.Abs(got-tt.want) > tol {
			t.Errorf("QuorumAvailability(%v) = %.12f, want %v", tt.ps, got, tt.want)
		}
	}
}

func TestIndependentAvailability(t *testing.T) {
	tests := []struct {
		ps   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{0.9}, 0.9},
		{[]float64{0.9, 0.9}, 0.99},
		{[]float64{0.5, 0.5, 0.5}, 0.875},
		{[]float64{1.2, 0}, 1},
	}
	for _, tt := range tests {
		if got := IndependentAvailability(tt.ps); math.Abs(got-tt.want) > tol {
			t.Errorf("IndependentAvailability(%v) = %.12f, want %v", tt.ps, got, tt.want)
		}
	}
}

// bruteQuorum enumerates all 2ⁿ up/down states.
func bruteQuorum(ps []float64) float64 {
	n := len(ps)
	var total float64
	for mask := 0; mask < 1<<n; mask++ {
		prob, up := 1.0, 0
		for i, p := range ps {
			if mask&(1<<i) != 0 {
				prob *= p
				up++
			} else {
				prob *= 1 - p
			}
		}
		if 2*up > n {
			total += prob
		}
	}
	return total
}

func placed(ordered []Cluster, r int) []float64 {
	ps := make([]float64, r)
	for i := range ps {
		ps[i] = ordered[i%len(ordered)].Availability
	}
	return ps
}

func TestQuorumAvailabilityMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 2))
	for i := range 2000 {
		ps := make([]float64, rng.IntN(12))
		for j := range ps {
			switch rng.IntN(10) {
			case 0:
				ps[j] = 0
			case 1:
				ps[j] = 1
			default:
				ps[j] = rng.Float64()
			}
		}
		if got, want := QuorumAvailability(ps), bruteQuorum(ps); math.Abs(got-want) > tol {
			t.Fatalf("case %d: DP %.15f, brute force %.15f for %v", i, got, want, ps)
		}
	}
}

func TestComputeIsMinimal(t *testing.T) {
	// Property: for random clusters the plan is the smallest count reaching
	// the target, judged by brute force.
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range 300 {
		cs := clusters()
		for range 1 + rng.IntN(4) {
			cs = append(cs, Cluster{Name: fmt.Sprintf("c%d", len(cs)), Availability: 0.6 + 0.4*rng.Float64()})
		}
		target := 0.9 + 0.099*rng.Float64()
		p, err := Compute(Input{Target: target, Clusters: cs, Cap: 12})
		if err != nil {
			t.Fatal(err)
		}
		for r := 1; r < p.Replicas; r++ {
			if bruteQuorum(placed(p.Ordered, r)) >= target {
				t.Fatalf("case %d: %d replicas reach %v already, plan chose %d", i, r, target, p.Replicas)
			}
		}
		a := bruteQuorum(placed(p.Ordered, p.Replicas))
		if math.Abs(a-p.Achieved) > tol || (!p.CapHit && a+1e-12 < target) {
			t.Fatalf("case %d: achieved %v brute %v target %v plan %+v", i, p.Achieved, a, target, p)
		}
	}
}

func TestAvailability(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	u := func(v uint32) *uint32 { return &v }
	tests := []struct {
		name        string
		crm         *float64
		nodes       *uint32
		ready       *uint32
		want        float64
		source      string
		wantInvalid bool
	}{
		{"crm value", f(0.95), u(3), u(1), 0.95, "crm", false},
		{"crm value without nodes", f(0.5), nil, nil, 0.5, "crm", false},
		{"crm value clamped high", f(1.3), nil, nil, 1, "crm", false},
		{"crm value clamped low", f(-0.1), nil, nil, 0, "crm", false},
		{"NaN crm value falls back to nodes", f(math.NaN()), u(4), u(3), 0.75, "ready_nodes", false},
		{"ready nodes", nil, u(4), u(3), 0.75, "ready_nodes", false},
		{"ready above nodes clamped", nil, u(2), u(5), 1, "ready_nodes", false},
		{"zero nodes", nil, u(0), u(0), 0, "", true},
		{"no nodes", nil, nil, u(3), 0, "", true},
		{"nodes without ready", nil, u(3), nil, 0, "", true},
		{"nothing", nil, nil, nil, 0, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, src, err := Availability(tt.crm, tt.nodes, tt.ready)
			if tt.wantInvalid {
				if fault.KindOf(err) != fault.Invalid {
					t.Fatalf("err %v, want Invalid", err)
				}
				return
			}
			if err != nil || math.Abs(got-tt.want) > tol || src != tt.source {
				t.Fatalf("got %v %q %v, want %v %q", got, src, err, tt.want, tt.source)
			}
		})
	}
}

func BenchmarkCompute100Clusters(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	cs := make([]Cluster, 100)
	for i := range cs {
		cs[i] = Cluster{Name: fmt.Sprintf("cluster-%03d", i), Availability: 0.8 + 0.19*rng.Float64()}
	}
	in := Input{Target: 0.99999, Clusters: cs, Strong: true}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compute(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkComputeCapHit(b *testing.B) {
	// The worst case: the target is never reached, so every count up to the
	// cap is evaluated.
	in := Input{Target: 0.99, Clusters: clusters(0.4, 0.45, 0.5)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compute(in); err != nil {
			b.Fatal(err)
		}
	}
}
