package cli

import (
	"context"
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

// rolloutDetail reads a deployment's per-cluster status: done when every
// cluster is RUNNING, failed when one failed, was rolled back, deleted or
// is DOWN; why and failed say which.
func rolloutDetail(d *pmv1.OClassDeployment) (state rollout, why string, failed *pmv1.ClusterRollout) {
	cls := d.GetStatus().GetClusters()
	if len(cls) == 0 {
		if d.GetCondition() == pmv1.DeploymentCondition_DOWN {
			return rolloutFailed, dash(d.GetStatus().GetLastError()), nil
		}
		return rolloutInProgress, "", nil
	}
	running := 0
	for _, r := range cls {
		switch {
		case r.GetState() == pmv1.RolloutState_ROLLOUT_STATE_FAILED || r.GetState() == pmv1.RolloutState_ROLLOUT_STATE_ROLLED_BACK ||
			r.GetState() == pmv1.RolloutState_ROLLOUT_STATE_DELETED ||
			r.GetCondition() == pmv1.DeploymentCondition_DOWN || r.GetCondition() == pmv1.DeploymentCondition_DELETED:
			msg := r.GetError()
			if msg == "" {
				msg = d.GetStatus().GetLastError()
			}
			if msg == "" {
				msg = fmt.Sprintf("%s (%s)", r.GetCondition(), word(r.GetState()))
			}
			return rolloutFailed, fmt.Sprintf("cluster %s: %s", r.GetCluster(), msg), r
		case r.GetCondition() == pmv1.DeploymentCondition_RUNNING:
			running++
		}
	}
	if running == len(cls) {
		return rolloutDone, "", nil
	}
	return rolloutInProgress, "", nil
}

// explain completes why, the reason a rollout failed: when PM's record
// does not say (a unit PM deployed that later degraded), the failed
// cluster's CRM is asked.
func explain(ctx context.Context, c *conn, why string, r *pmv1.ClusterRollout) string {
	if r == nil || r.GetError() != "" || r.GetUnitId() == "" || r.GetCondition() != pmv1.DeploymentCondition_DOWN {
		return why
	}
	res, err := c.runtimes.GetDeploymentStatus(ctx, &pmv1.GetDeploymentStatusRequest{Id: r.GetUnitId(), Cluster: r.GetCluster()})
	if err != nil || res.GetStatus().GetMessage() == "" {
		return why
	}
	return fmt.Sprintf("cluster %s: %s: %s", r.GetCluster(), r.GetCondition(), res.GetStatus().GetMessage())
}

// clusterLine is one cluster's part of a rollout as progress shows it.
func clusterLine(r *pmv1.ClusterRollout) string {
	s := fmt.Sprintf("%s (%s)", r.GetCondition(), word(r.GetState()))
	if r.GetError() != "" {
		s += ": " + r.GetError()
	}
	return s
}

// waitRollouts follows the rollout of each deployment in keys until every
// cluster of each is RUNNING or one fails, printing each cluster's changes.
// A deployment not found yet (an embedded one PM has still to stage) is
// asked for again.
func (a *app) waitRollouts(parent context.Context, c *conn, keys []string, f rolloutFlags) error {
	ctx, cancel := context.WithTimeout(parent, f.timeout)
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
					return stopped(parent, f.timeout, pending)
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
			switch state, why, bad := rolloutDetail(d); state {
			case rolloutDone:
				_, _ = fmt.Fprintf(out, "deployment/%s is RUNNING on %d cluster(s)\n", key, len(d.GetStatus().GetClusters()))
			case rolloutFailed:
				why = explain(ctx, c, why, bad)
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
			return stopped(parent, f.timeout, pending)
		}
	}
	if len(failures) > 0 {
		return failf(ExitError, "%s", strings.Join(failures, "; "))
	}
	return nil
}

// stopped is the error of a wait that was interrupted (parent ended) or
// ran out of --timeout.
func stopped(parent context.Context, timeout time.Duration, pending []string) error {
	if parent.Err() != nil {
		return failf(ExitError, "interrupted while waiting for %s to roll out", quoteAll(pending))
	}
	return failf(ExitError, "timed out after %s waiting for %s to roll out", timeout, quoteAll(pending))
}

func quoteAll(keys []string) string {
	q := make([]string, len(keys))
	for i, k := range keys {
		q[i] = fmt.Sprintf("deployment %q", k)
	}
	return strings.Join(q, ", ")
}
