package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
)

// rollout is where a deployment's rollout stands.
type rollout int

const (
	rolloutInProgress rollout = iota
	rolloutDone
	rolloutFailed
)

// rolloutOf reads a deployment's per-cluster status: done when every
// cluster is RUNNING, failed when one failed, was rolled back, deleted or
// is DOWN; why says which.
func rolloutOf(d *pmv1.OClassDeployment) (state rollout, why string) {
	cls := d.GetStatus().GetClusters()
	if len(cls) == 0 {
		if d.GetCondition() == pmv1.DeploymentCondition_DOWN {
			return rolloutFailed, dash(d.GetStatus().GetLastError())
		}
		return rolloutInProgress, ""
	}
	running := 0
	for _, r := range cls {
		switch {
		case r.GetState() == "failed" || r.GetState() == "rolled_back" || r.GetState() == "deleted" ||
			r.GetCondition() == pmv1.DeploymentCondition_DOWN || r.GetCondition() == pmv1.DeploymentCondition_DELETED:
			msg := r.GetError()
			if msg == "" {
				msg = d.GetStatus().GetLastError()
			}
			if msg == "" {
				msg = fmt.Sprintf("%s (%s)", r.GetCondition(), r.GetState())
			}
			return rolloutFailed, fmt.Sprintf("cluster %s: %s", r.GetCluster(), msg)
		case r.GetCondition() == pmv1.DeploymentCondition_RUNNING:
			running++
		}
	}
	if running == len(cls) {
		return rolloutDone, ""
	}
	return rolloutInProgress, ""
}

// clusterLine is one cluster's part of a rollout as progress shows it.
func clusterLine(r *pmv1.ClusterRollout) string {
	s := fmt.Sprintf("%s (%s)", r.GetCondition(), dash(r.GetState()))
	if r.GetError() != "" {
		s += ": " + r.GetError()
	}
	return s
}

// waitRollouts follows the rollout of each deployment in keys until every
// cluster of each is RUNNING or one fails, printing each cluster's changes.
// A deployment not found yet (an embedded one PM has still to stage) is
// asked for again.
func (a *app) waitRollouts(ctx context.Context, c *conn, keys []string, f rolloutFlags) error {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	out := a.progress()
	pending := slices.Clone(keys)
	slices.Sort(pending)
	pending = slices.Compact(pending)
	last := map[string]string{} // "key/cluster" → last printed line
	var failures []string
	interval := max(f.interval, 10*time.Millisecond)
	for {
		var next []string
		for _, key := range pending {
			res, err := c.deployments.GetDeployment(ctx, &pmv1.GetDeploymentRequest{Key: key})
			if err != nil {
				if ctx.Err() != nil {
					return stopped(ctx, f.timeout, pending)
				}
				if isCode(err, connect.CodeNotFound) {
					next = append(next, key)
					continue
				}
				return c.apiError(fmt.Sprintf("reading deployment %q", key), err)
			}
			d := res.GetDeployment()
			for _, r := range d.GetStatus().GetClusters() {
				line := clusterLine(r)
				id := key + "/" + r.GetCluster()
				if last[id] != line {
					last[id] = line
					_, _ = fmt.Fprintf(out, "deployment/%s %s: %s\n", key, r.GetCluster(), line)
				}
			}
			switch state, why := rolloutOf(d); state {
			case rolloutDone:
				_, _ = fmt.Fprintf(out, "deployment/%s is RUNNING on %d cluster(s)\n", key, len(d.GetStatus().GetClusters()))
			case rolloutFailed:
				_, _ = fmt.Fprintf(out, "deployment/%s failed: %s\n", key, why)
				failures = append(failures, fmt.Sprintf("deployment %q failed on %s", key, why))
			default:
				next = append(next, key)
			}
		}
		pending = next
		if len(pending) == 0 {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(interval):
		}
		if ctx.Err() != nil {
			return stopped(ctx, f.timeout, pending)
		}
	}
	if len(failures) > 0 {
		return failf(ExitError, "%s", strings.Join(failures, "; "))
	}
	return nil
}

// stopped is the error of a wait that ran out of time or was interrupted.
func stopped(ctx context.Context, timeout time.Duration, pending []string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return failf(ExitError, "timed out after %s waiting for %s to roll out", timeout, quoteAll(pending))
	}
	return failf(ExitError, "interrupted while waiting for %s to roll out", quoteAll(pending))
}

func quoteAll(keys []string) string {
	q := make([]string, len(keys))
	for i, k := range keys {
		q[i] = fmt.Sprintf("deployment %q", k)
	}
	return strings.Join(q, ", ")
}
