package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/oaas/pm/bench/internal/pace"
	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	"github.com/oaas/pm/gen/go/oaas/deployment/deploymentconnect"
	"github.com/oaas/pm/internal/deploy"
)

// verifier compares the ledger, PM's view and what the clusters run.
type verifier struct {
	api      *client
	clusters []cluster
	crms     []deploymentconnect.DeploymentServiceClient
	ledger   []entry
	o        *options
}

func newVerifier(api *client, clusters []cluster, ledger []entry, o *options) *verifier {
	tr := &http.Transport{}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true) // gRPC over h2c
	hc := &http.Client{Transport: tr}
	crms := make([]deploymentconnect.DeploymentServiceClient, len(clusters))
	for i, c := range clusters {
		crms[i] = deploymentconnect.NewDeploymentServiceClient(hc, c.url(), connect.WithGRPC())
	}
	return &verifier{api: api, clusters: clusters, crms: crms, ledger: ledger, o: o}
}

// snapshot is one look at PM and the clusters.
type snapshot struct {
	runtimes map[string]map[string]bool   // cluster → unit ids it runs
	modes    map[string]map[string]string // cluster → unit id → the MODE it runs
	known    map[string]bool              // deployment keys PM has
	specs    map[string]spec              // deployment → the spec PM stores
	mappings map[string]map[string]string // deployment → cluster → unit
	pending  int                          // PM operations still active
}

// take reads every cluster straight over gRPC, then PM's deployments and
// their mappings from one PM.
func (v *verifier) take(ctx context.Context) (*snapshot, error) {
	s := &snapshot{runtimes: map[string]map[string]bool{}, modes: map[string]map[string]string{}, known: map[string]bool{},
		specs: map[string]spec{}, mappings: map[string]map[string]string{}}
	for i, c := range v.clusters {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := v.crms[i].ListClassRuntimes(cctx, &deploymentpb.ListClassRuntimesRequest{})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("cluster %s: ListClassRuntimes: %w", c.name, err)
		}
		s.runtimes[c.name], s.modes[c.name] = map[string]bool{}, map[string]string{}
		for _, u := range resp.GetItems() {
			s.runtimes[c.name][u.GetId()] = true
			if fns := u.GetFunctions(); len(fns) > 0 {
				s.modes[c.name][u.GetId()] = fns[0].GetConfig()["MODE"]
			}
		}
	}

	pm := v.api.pick(ctx)
	for offset := 0; ; {
		r := v.api.do(ctx, pm, http.MethodGet, fmt.Sprintf("/api/v1/deployments?limit=200&offset=%d", offset), nil, nil)
		if r.err != nil || r.status != http.StatusOK {
			return nil, fmt.Errorf("listing deployments: %s", r)
		}
		var page []struct {
			Key string `json:"key"`
		}
		if err := json.Unmarshal(r.body, &page); err != nil {
			return nil, fmt.Errorf("listing deployments: %w", err)
		}
		for _, d := range page {
			s.known[d.Key] = true
		}
		if len(page) < 200 {
			break
		}
		offset += len(page)
	}
	for _, key := range slices.Sorted(maps.Keys(s.known)) {
		r := v.api.do(ctx, pm, http.MethodGet, "/api/v1/deployments/"+url.PathEscape(key)+"/cluster-mappings", nil, nil)
		if r.err == nil && r.status == http.StatusNotFound {
			delete(s.known, key) // deleted since the listing
			continue
		}
		if r.err != nil || r.status != http.StatusOK {
			return nil, fmt.Errorf("mappings of %s: %s", key, r)
		}
		var m struct {
			ClusterMappings map[string]string `json:"cluster_mappings"`
		}
		if err := json.Unmarshal(r.body, &m); err != nil {
			return nil, fmt.Errorf("mappings of %s: %w", key, err)
		}
		s.mappings[key] = m.ClusterMappings
		r = v.api.do(ctx, pm, http.MethodGet, "/api/v1/deployments/"+url.PathEscape(key), nil, nil)
		if r.err == nil && r.status == http.StatusNotFound {
			delete(s.known, key)
			delete(s.mappings, key)
			continue
		}
		if r.err != nil || r.status != http.StatusOK {
			return nil, fmt.Errorf("get %s: %s", key, r)
		}
		var d struct {
			TargetEnvs []string `json:"target_envs"`
			Functions  []struct {
				Config map[string]string `json:"config"`
			} `json:"functions"`
		}
		if err := json.Unmarshal(r.body, &d); err != nil {
			return nil, fmt.Errorf("get %s: %w", key, err)
		}
		sp := spec{targets: d.TargetEnvs}
		if len(d.Functions) > 0 {
			sp.mode = d.Functions[0].Config["MODE"]
		}
		s.specs[key] = sp
	}
	// An acknowledged deployment missing from the list is confirmed with a
	// GET before it counts as lost.
	for _, e := range v.ledger {
		if e.expect() != mustExist || s.known[e.key] {
			continue
		}
		r := v.api.do(ctx, pm, http.MethodGet, "/api/v1/deployments/"+url.PathEscape(e.key), nil, nil)
		if r.err != nil || (r.status != http.StatusOK && r.status != http.StatusNotFound) {
			return nil, fmt.Errorf("get %s: %s", e.key, r)
		}
		if r.status == http.StatusOK {
			return nil, fmt.Errorf("get %s: 200 but the listing lacks it", e.key)
		}
	}
	if r := v.api.do(ctx, pm, http.MethodGet, "/api/v1/operations?active=true&limit=1000", nil, nil); r.err == nil && r.status == http.StatusOK {
		var ops []json.RawMessage
		if json.Unmarshal(r.body, &ops) == nil {
			s.pending = len(ops)
		}
	}
	return s, nil
}

// verdict is what a snapshot says.
type verdict struct {
	lost, orphans int
	problems      []string
}

func (d verdict) ok() bool { return d.lost == 0 && d.orphans == 0 && len(d.problems) == 0 }

// judge checks a snapshot against the ledger.
func (v *verifier) judge(s *snapshot) verdict {
	var d verdict
	// mapped is every (cluster, unit) PM maps.
	mapped := map[string]map[string]string{} // cluster → unit → deployment
	for key, ms := range s.mappings {
		for c, u := range ms {
			if mapped[c] == nil {
				mapped[c] = map[string]string{}
			}
			mapped[c][u] = key
		}
	}
	inLedger := map[string]bool{}
	full := v.o.failRate == 0 && v.o.crmsimFlags == ""
	for _, e := range v.ledger {
		inLedger[e.key] = true
		if e.lostEarly {
			d.lost++
			d.problems = append(d.problems, fmt.Sprintf("%s: acknowledged create, but its first delete got 404 (%s)", e.key, strings.Join(e.notes, "; ")))
		}
		switch e.expect() {
		case mustExist:
			if !s.known[e.key] {
				d.lost++
				d.problems = append(d.problems, fmt.Sprintf("LOST %s: created with 201, PM answers 404 (%s)", e.key, strings.Join(e.notes, "; ")))
				continue
			}
			if _, ok := v.specOf(s, e); !ok && e.updated {
				d.lost++
				d.problems = append(d.problems, fmt.Sprintf("LOST update %s: PM stores %s, acknowledged %s (%s)",
					e.key, s.specs[e.key], spec{mode: e.mode, targets: e.targets}, strings.Join(e.notes, "; ")))
				continue
			}
			d.problems = append(d.problems, v.complete(s, e, full)...)
		case mustBeGone:
			var left []string
			if s.known[e.key] {
				left = append(left, "PM still has it")
			}
			for _, c := range v.clusters {
				if u := deploy.UnitID(e.key, c.name); s.runtimes[c.name][u] {
					left = append(left, c.name+" runs "+u)
				}
			}
			if len(left) > 0 && !e.lostEarly {
				d.lost++
				d.problems = append(d.problems, fmt.Sprintf("LOST delete %s: acknowledged, but %s (%s)", e.key, strings.Join(left, ", "), strings.Join(e.notes, "; ")))
			}
		case eitherWay:
			if s.known[e.key] {
				d.problems = append(d.problems, v.complete(s, e, full)...)
			}
		}
	}
	for key := range s.known {
		if !inLedger[key] {
			d.problems = append(d.problems, fmt.Sprintf("PM has deployment %s, which the workload never created", key))
		}
	}
	for _, c := range v.clusters {
		for _, u := range slices.Sorted(maps.Keys(s.runtimes[c.name])) {
			if _, ok := mapped[c.name][u]; !ok {
				d.orphans++
				d.problems = append(d.problems, fmt.Sprintf("orphan: %s runs %s, which PM does not map", c.name, u))
			}
		}
	}
	return d
}

// specOf is the spec of e's ledger that PM stores: the acknowledged one,
// or one an unacknowledged update may have applied.
func (v *verifier) specOf(s *snapshot, e entry) (spec, bool) {
	got := s.specs[e.key]
	for _, sp := range e.acceptable() {
		if sp.mode == got.mode && slices.Equal(slices.Sorted(slices.Values(sp.targets)), slices.Sorted(slices.Values(got.targets))) {
			return sp, true
		}
	}
	return spec{}, false
}

// complete checks that a deployment PM has stores a spec the workload
// asked for, is mapped on that spec's targets (all of them unless CRM
// calls may fail), and that every mapped unit runs that spec.
func (v *verifier) complete(s *snapshot, e entry, full bool) []string {
	var out []string
	sp, ok := v.specOf(s, e)
	if !ok {
		return []string{fmt.Sprintf("%s: PM stores %s, which the workload never asked for (asked %v)", e.key, s.specs[e.key], e.acceptable())}
	}
	ms := s.mappings[e.key]
	for c, u := range ms {
		switch {
		case !slices.Contains(sp.targets, c):
			out = append(out, fmt.Sprintf("%s: mapped on %s, not one of its targets %v", e.key, c, sp.targets))
		case !s.runtimes[c][u]:
			out = append(out, fmt.Sprintf("%s: mapped to %s on %s, which does not run it", e.key, u, c))
		case full && s.modes[c][u] != sp.mode:
			out = append(out, fmt.Sprintf("%s: %s runs %s at %q, PM stores %q", e.key, c, u, s.modes[c][u], sp.mode))
		}
	}
	if full {
		for _, c := range sp.targets {
			if _, ok := ms[c]; !ok {
				out = append(out, fmt.Sprintf("%s: no mapping on target %s (has %v)", e.key, c, ms))
			}
		}
	} else if len(ms) == 0 {
		out = append(out, fmt.Sprintf("%s: PM has it but maps it nowhere", e.key))
	}
	sort.Strings(out)
	return out
}

// outcome is what convergence came to.
type outcome struct {
	converged     bool
	after         time.Duration
	lost, orphans int
	problems      []string
}

// converge polls until a snapshot passes and a second one a while later
// (a reconcile pass and a lease) still does, or until timeout after from.
func (v *verifier) converge(ctx context.Context, from time.Time, timeout time.Duration) outcome {
	confirm := v.o.reconcile + v.o.lease
	deadline := from.Add(timeout)
	var firstOK time.Time
	var last verdict
	var lastErr error
	checks := 0
	for ctx.Err() == nil {
		s, err := v.take(ctx)
		checks++
		now := time.Now()
		if err != nil {
			lastErr = err
			if v.o.verbose {
				logf("check %d: %v", checks, err)
			}
		} else {
			lastErr = nil
			last = v.judge(s)
			if v.o.verbose || checks%20 == 1 {
				logf("check %d: %d deployments, %d pending operations, lost %d, orphans %d, %d problems",
					checks, len(s.known), s.pending, last.lost, last.orphans, len(last.problems))
			}
			if last.ok() {
				if firstOK.IsZero() {
					firstOK = now
					logf("consistent %.2fs after the faults (%d deployments, %d pending operations); confirming in %s",
						firstOK.Sub(from).Seconds(), len(s.known), s.pending, confirm)
				}
				if now.Sub(firstOK) >= confirm {
					return outcome{converged: true, after: max(firstOK.Sub(from), 0)}
				}
			} else if !firstOK.IsZero() {
				logf("inconsistent again: %s", strings.Join(head(last.problems, 5), " | "))
				firstOK = time.Time{}
			}
		}
		if firstOK.IsZero() && now.After(deadline) {
			break
		}
		_ = pace.Sleep(ctx, 250*time.Millisecond)
	}
	out := outcome{lost: last.lost, orphans: last.orphans, problems: last.problems}
	if lastErr != nil {
		out.problems = append(out.problems, "last check failed: "+lastErr.Error())
	}
	return out
}

func head(s []string, n int) []string { return s[:min(n, len(s))] }
