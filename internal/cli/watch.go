package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
)

func (a *app) watchCommand() *cobra.Command {
	var (
		interval time.Duration
		timeout  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "watch deployments|DEPLOYMENT",
		Short: "Print changes to deployments (or one) as they happen, until Ctrl-C or --timeout",
		Long: `Print changes to every deployment, or to one, as they happen: the current
state first, then each change of condition or of a cluster's rollout, and
deletions. It follows PM's watch stream (resuming after a cut from the last
event it saw); a PM without one is asked every --interval instead.
Ctrl-C or --timeout ends it with exit code 0.

With -o json each change is one JSON object per line:
{"type":"ADDED|MODIFIED|DELETED","deployment":{...}}; -o yaml prints the
same as YAML documents.`,
		Example: `  pmctl watch deployments
  pmctl watch echo --timeout 5m`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeNames("deployments"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			c, err := a.connect(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			key := strings.TrimPrefix(args[0], "deployment/")
			if r, ok := resourceNames[strings.ToLower(args[0])]; ok && r == "deployments" {
				key = ""
			}
			return a.watch(ctx, c, key, max(interval, 10*time.Millisecond))
		}),
	}
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "how often to ask a PM that serves no watch stream")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "stop after this long (default: until Ctrl-C)")
	return cmd
}

// snapshot fetches the deployments a watch follows, by key.
func (a *app) snapshot(ctx context.Context, c *conn, key string) (map[string]*pmv1.OClassDeployment, error) {
	out := map[string]*pmv1.OClassDeployment{}
	if key == "" {
		items, err := a.deploymentList(ctx, c, "", getFlags{})
		if err != nil {
			return nil, err
		}
		for _, d := range items {
			out[d.GetKey()] = d
		}
		return out, nil
	}
	res, err := c.deployments.GetDeployment(ctx, &pmv1.GetDeploymentRequest{Key: key})
	switch {
	case isCode(err, connect.CodeNotFound):
		return out, nil
	case err != nil:
		return nil, c.apiError(fmt.Sprintf("reading deployment %q", key), err)
	}
	out[key] = res.GetDeployment()
	return out, nil
}

// watch prints changes until ctx ends: from PM's watch stream, or, when PM
// serves none (an older PM), by polling.
func (a *app) watch(ctx context.Context, c *conn, key string, interval time.Duration) error {
	prev := map[string]string{}
	err := a.stream(ctx, c, key, prev)
	if !isCode(err, connect.CodeUnimplemented) && !isCode(err, connect.CodeNotFound) {
		return err
	}
	return a.poll(ctx, c, key, interval, prev)
}

// stream follows WatchDeployments, reconnecting from the last cursor when
// the stream is cut; it returns unimplemented when PM has no stream.
func (a *app) stream(ctx context.Context, c *conn, key string, prev map[string]string) error {
	cursor, synced := "", false
	for {
		st, err := c.watches.WatchDeployments(ctx, &pmv1.WatchRequest{Key: key, ResumeFrom: cursor})
		if err == nil {
			seen := map[string]bool{}
			for st.Receive() {
				ev := st.Msg()
				if ev.GetCursor() != "" {
					cursor = ev.GetCursor()
				}
				d := ev.GetDeployment()
				switch ev.GetType() {
				case pmv1.EventType_EVENT_TYPE_SNAPSHOT, pmv1.EventType_EVENT_TYPE_ADDED, pmv1.EventType_EVENT_TYPE_CHANGED:
					seen[d.GetKey()] = true
					if err := a.show(d.GetKey(), d, prev); err != nil {
						return err
					}
				case pmv1.EventType_EVENT_TYPE_DELETED:
					if err := a.show(d.GetKey(), nil, prev); err != nil {
						return err
					}
				case pmv1.EventType_EVENT_TYPE_SYNCED:
					if !synced && key != "" && !seen[key] {
						return failf(ExitNotFound, "deployment %q not found", key)
					}
					synced = true
				}
			}
			err = st.Err()
			_ = st.Close()
		}
		switch {
		case ctx.Err() != nil:
			return nil //nolint:nilerr // Ctrl-C or --timeout ends a watch normally
		case isCode(err, connect.CodeUnimplemented) || isCode(err, connect.CodeNotFound):
			return err
		case isCode(err, connect.CodeOutOfRange) || isCode(err, connect.CodeInvalidArgument):
			cursor = "" // the cursor is too old: start again from a snapshot
		case err != nil && !synced:
			return c.apiError("watching deployments", err)
		case err != nil:
			_, _ = fmt.Fprintf(a.streams.Err, "warning: %v (reconnecting)\n", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// show prints d (nil: deleted) when it differs from what was printed last.
func (a *app) show(key string, d *pmv1.OClassDeployment, prev map[string]string) error {
	if d == nil {
		if _, ok := prev[key]; !ok {
			return nil
		}
		delete(prev, key)
		return a.emit("DELETED", key, nil)
	}
	line := watchLine(d)
	old, seen := prev[key]
	if seen && old == line {
		return nil
	}
	prev[key] = line
	typ := "MODIFIED"
	if !seen {
		typ = "ADDED"
	}
	return a.emit(typ, key, d)
}

// poll asks PM every interval until ctx ends, printing what changed.
func (a *app) poll(ctx context.Context, c *conn, key string, interval time.Duration, prev map[string]string) error {
	first := true
	for {
		snap, err := a.snapshot(ctx, c, key)
		switch {
		case ctx.Err() != nil:
			return nil //nolint:nilerr // Ctrl-C or --timeout ends a watch normally, whatever the poll it cut short
		case err != nil && first:
			return err
		case err != nil:
			_, _ = fmt.Fprintf(a.streams.Err, "warning: %v (retrying)\n", err)
		default:
			if first && key != "" && len(snap) == 0 {
				return failf(ExitNotFound, "deployment %q not found", key)
			}
			keys := slices.Sorted(maps.Keys(snap))
			for k := range prev {
				if _, ok := snap[k]; !ok {
					keys = append(keys, k)
				}
			}
			for _, k := range keys {
				if err := a.show(k, snap[k], prev); err != nil {
					return err
				}
			}
			first = false
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// watchLine is what a watch compares and prints of a deployment.
func watchLine(d *pmv1.OClassDeployment) string {
	parts := []string{d.GetCondition().String(), "ready " + readyText(d)}
	for _, r := range d.GetStatus().GetClusters() {
		parts = append(parts, r.GetCluster()+"="+clusterLine(r))
	}
	if e := d.GetStatus().GetLastError(); e != "" {
		parts = append(parts, "last error: "+e)
	}
	return strings.Join(parts, "  ")
}

func (a *app) emit(typ, key string, d *pmv1.OClassDeployment) error {
	if a.output == "table" {
		stamp := time.Now().Format("15:04:05")
		if d == nil {
			_, err := fmt.Fprintf(a.streams.Out, "%s  deployment/%s  deleted\n", stamp, key)
			return err
		}
		_, err := fmt.Fprintf(a.streams.Out, "%s  deployment/%s  %s\n", stamp, key, watchLine(d))
		return err
	}
	ev := map[string]any{"type": typ}
	if d != nil {
		dj, err := protoJSON(d)
		if err != nil {
			return err
		}
		ev["deployment"] = dj
	} else {
		ev["deployment"] = map[string]string{"key": key}
	}
	raw, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	if a.output == "json" {
		_, err = fmt.Fprintf(a.streams.Out, "%s\n", raw)
		return err
	}
	if _, err := fmt.Fprintln(a.streams.Out, "---"); err != nil {
		return err
	}
	return writeFormatted(a.streams.Out, "yaml", raw)
}
