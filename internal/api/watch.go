package api

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/internal/auth"
	"github.com/oaas/pm/internal/catalog"
	"github.com/oaas/pm/internal/cluster"
	"github.com/oaas/pm/internal/deploy"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/watch"
)

// Watch serves oaas.pm.v1.WatchService from a watch hub: a snapshot (or a
// resume from a cursor), then the hub's events, with heartbeats.
type Watch struct {
	hub      *watch.Hub
	pkgs     *catalog.Service
	deps     *deploy.Service
	clusters *cluster.Manager

	// refresh asks for cluster health while anyone watches it (see
	// clusterRefresh); watchers counts them.
	mu       sync.Mutex
	watchers int
	stop     context.CancelFunc
}

// clusterRefresh is how often cluster health is asked for while anyone
// watches it: as often as the console polled the list, so a watch is as
// fresh as polling was. The health cache (CRM_HEALTH_CACHE_TTL) still
// decides how often a CRM is called, and changes reach the watchers
// through the cluster manager's OnHealthChange.
const clusterRefresh = 2 * time.Second

// watchingClusters keeps cluster health fresh until release is called.
func (w *Watch) watchingClusters() (release func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.watchers++; w.watchers == 1 {
		ctx, cancel := context.WithCancel(context.Background())
		w.stop = cancel
		go func() {
			t := time.NewTicker(clusterRefresh)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					w.clusters.HealthAll(ctx)
				}
			}
		}()
	}
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.watchers--; w.watchers == 0 {
			w.stop()
		}
	}
}

var _ pmv1connect.WatchServiceHandler = (*Watch)(nil)

// NewWatch returns the watch handlers.
func NewWatch(hub *watch.Hub, pkgs *catalog.Service, deps *deploy.Service, clusters *cluster.Manager) *Watch {
	return &Watch{hub: hub, pkgs: pkgs, deps: deps, clusters: clusters}
}

// DefaultHeartbeat is the heartbeat interval when a request names none.
const DefaultHeartbeat = 15 * time.Second

// maxHeartbeat bounds heartbeat_seconds: proxies close quiet streams.
const maxHeartbeat = 300

// watchProcedures are the RPCs whose role rows (internal/auth) authorize
// each event of a kind: an event passes the same check as the call.
var watchProcedures = map[watch.Kind]string{
	watch.Packages:    auth.ProcedureWatchPackages,
	watch.Deployments: auth.ProcedureWatchDeployments,
	watch.Operations:  auth.ProcedureWatchOperations,
	watch.Clusters:    auth.ProcedureWatchClusters,
}

// WatchResolvers are the hub's readers of changed objects, in the API's
// messages.
func WatchResolvers(pkgs *catalog.Service, deps *deploy.Service) map[watch.Kind]watch.Resolver {
	each := func(read func(ctx context.Context, key string) (watch.Object, error)) watch.Resolver {
		return func(ctx context.Context, keys []string) (map[string]watch.Object, error) {
			out := make(map[string]watch.Object, len(keys))
			for _, k := range keys {
				o, err := read(ctx, k)
				if fault.KindOf(err) == fault.NotFound {
					continue
				}
				if err != nil {
					return nil, err
				}
				out[k] = o
			}
			return out, nil
		}
	}
	return map[watch.Kind]watch.Resolver{
		watch.Packages: each(func(ctx context.Context, name string) (watch.Object, error) {
			rec, err := pkgs.Get(ctx, name)
			return watch.Object{Value: rec.Package, Revision: catalog.FormatRevision(rec.Revision)}, err
		}),
		watch.Deployments: each(func(ctx context.Context, key string) (watch.Object, error) {
			d, err := deps.Get(ctx, key)
			if err != nil {
				return watch.Object{}, err
			}
			return watch.Object{Value: deploymentPB(&d), Revision: catalog.FormatRevision(d.Revision)}, nil
		}),
		watch.Operations: each(func(ctx context.Context, id string) (watch.Object, error) {
			op, err := deps.Operation(ctx, id)
			if err != nil {
				return watch.Object{}, err
			}
			return watch.Object{Value: operationPB(&op)}, nil
		}),
	}
}

// PublishClusterHealth returns the cluster manager's health listener that
// publishes each change to hub.
func PublishClusterHealth(hub *watch.Hub) func(cluster.Health) {
	return func(h cluster.Health) {
		hub.Publish(watch.Clusters, h.Cluster, watch.Object{Value: &pmv1.ClusterInfo{Name: h.Cluster, Health: h.Proto()}})
	}
}

// WatchDeployments implements WatchService.
func (w *Watch) WatchDeployments(ctx context.Context, req *pmv1.WatchRequest, stream *connect.ServerStream[pmv1.DeploymentEvent]) error {
	return w.serve(ctx, watch.Deployments, req, func(ev watch.Event) error {
		d, _ := ev.Object.(*pmv1.OClassDeployment)
		if ev.Type == watch.Deleted {
			d = &pmv1.OClassDeployment{Key: ev.Key}
		}
		return stream.Send(&pmv1.DeploymentEvent{Type: eventTypePB(ev.Type), Deployment: d, Revision: ev.Revision, Cursor: ev.Cursor})
	})
}

// WatchPackages implements WatchService.
func (w *Watch) WatchPackages(ctx context.Context, req *pmv1.WatchRequest, stream *connect.ServerStream[pmv1.PackageEvent]) error {
	return w.serve(ctx, watch.Packages, req, func(ev watch.Event) error {
		p, _ := ev.Object.(*pmv1.OPackage)
		if ev.Type == watch.Deleted {
			p = &pmv1.OPackage{Name: ev.Key}
		}
		return stream.Send(&pmv1.PackageEvent{Type: eventTypePB(ev.Type), Package: p, Revision: ev.Revision, Cursor: ev.Cursor})
	})
}

// WatchOperations implements WatchService; key is a deployment key.
func (w *Watch) WatchOperations(ctx context.Context, req *pmv1.WatchRequest, stream *connect.ServerStream[pmv1.OperationEvent]) error {
	return w.serve(ctx, watch.Operations, req, func(ev watch.Event) error {
		op, _ := ev.Object.(*pmv1.Operation)
		if ev.Type == watch.Deleted {
			op = &pmv1.Operation{Id: ev.Key}
		}
		return stream.Send(&pmv1.OperationEvent{Type: eventTypePB(ev.Type), Operation: op, Cursor: ev.Cursor})
	})
}

// WatchClusters implements WatchService. Cluster health has no history:
// every watch, with a cursor or not, starts with a snapshot.
func (w *Watch) WatchClusters(ctx context.Context, req *pmv1.WatchRequest, stream *connect.ServerStream[pmv1.ClusterEvent]) error {
	defer w.watchingClusters()()
	return w.serve(ctx, watch.Clusters, req, func(ev watch.Event) error {
		c, _ := ev.Object.(*pmv1.ClusterInfo)
		return stream.Send(&pmv1.ClusterEvent{Type: eventTypePB(ev.Type), Cluster: c, Cursor: ev.Cursor})
	})
}

// serve runs one watch: subscribe, snapshot or resume, then events until
// the client leaves or the subscription is cut off.
func (w *Watch) serve(ctx context.Context, kind watch.Kind, req *pmv1.WatchRequest, send func(watch.Event) error) error {
	heartbeat := DefaultHeartbeat
	switch hs := req.GetHeartbeatSeconds(); {
	case hs < 0 || hs > maxHeartbeat:
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("heartbeat_seconds: %d is not between 1 and %d (0 for the default, %s)", hs, maxHeartbeat, DefaultHeartbeat))
	case hs > 0:
		heartbeat = time.Duration(hs) * time.Second
	}
	sub, err := w.hub.Subscribe(ctx, watch.Request{Kind: kind, Key: req.GetKey(), Cursor: req.GetResumeFrom(), Allow: allowEvents(ctx, kind)})
	if err != nil {
		return watchError(ctx, err)
	}
	defer sub.Close()
	if sub.Fresh() {
		err := w.snapshot(ctx, kind, req.GetKey(), func(ev watch.Event) error {
			if !sub.Allowed(ev) {
				return nil
			}
			return send(ev)
		})
		if err == nil {
			err = send(watch.Event{Type: watch.Synced, Kind: kind, Cursor: sub.StartCursor()})
		}
		if err != nil {
			return watchError(ctx, err)
		}
	} else if err := send(watch.Event{Type: watch.Heartbeat, Kind: kind, Cursor: sub.StartCursor()}); err != nil {
		// At once, so the client knows the resume took.
		return watchError(ctx, err)
	}
	for {
		ev, err := sub.Next(ctx, heartbeat)
		if err == nil {
			err = send(ev)
		}
		if err != nil {
			return watchError(ctx, err)
		}
	}
}

// allowEvents is the per-event authorization of a watch: the caller's
// role against the role row of the kind's watch RPC.
func allowEvents(ctx context.Context, kind watch.Kind) func(watch.Event) bool {
	p, ok := auth.FromContext(ctx)
	return func(watch.Event) bool {
		if !ok {
			return false
		}
		need, known := auth.Required(watchProcedures[kind])
		return known && p.Role.Allows(need)
	}
}

// snapshot sends every current object of kind (or the one named key) as
// Snapshot events.
func (w *Watch) snapshot(ctx context.Context, kind watch.Kind, key string, send func(watch.Event) error) error {
	emit := func(k string, v any, rev string) error {
		return send(watch.Event{Type: watch.Snapshot, Kind: kind, Key: k, Object: v, Revision: rev})
	}
	one := func(err error, k string, v any, rev string) error {
		if fault.KindOf(err) == fault.NotFound {
			return nil // not there (yet): the events will say when it is
		}
		if err != nil {
			return err
		}
		return emit(k, v, rev)
	}
	switch kind {
	case watch.Packages:
		if key != "" {
			rec, err := w.pkgs.Get(ctx, key)
			return one(err, key, rec.Package, catalog.FormatRevision(rec.Revision))
		}
		for tok := ""; ; {
			recs, next, err := w.pkgs.List(ctx, catalog.ListQuery{Limit: catalog.MaxLimit, PageToken: tok})
			if err != nil {
				return err
			}
			for _, rec := range recs {
				if err := emit(rec.Package.GetName(), rec.Package, catalog.FormatRevision(rec.Revision)); err != nil {
					return err
				}
			}
			if tok = next; tok == "" {
				return nil
			}
		}
	case watch.Deployments:
		if key != "" {
			d, err := w.deps.Get(ctx, key)
			return one(err, key, deploymentPB(&d), catalog.FormatRevision(d.Revision))
		}
		for tok := ""; ; {
			ds, next, err := w.deps.List(ctx, deploy.ListQuery{Limit: catalog.MaxLimit, PageToken: tok})
			if err != nil {
				return err
			}
			for i := range ds {
				if err := emit(ds[i].Key, deploymentPB(&ds[i]), catalog.FormatRevision(ds[i].Revision)); err != nil {
					return err
				}
			}
			if tok = next; tok == "" {
				return nil
			}
		}
	case watch.Operations:
		for tok := ""; ; {
			ops, next, err := w.deps.Operations(ctx, deploy.OperationsQuery{DeploymentKey: key, Limit: catalog.MaxLimit, PageToken: tok})
			if err != nil {
				return err
			}
			for i := range ops {
				if err := emit(ops[i].ID, operationPB(&ops[i]), ""); err != nil {
					return err
				}
			}
			if tok = next; tok == "" {
				return nil
			}
		}
	case watch.Clusters:
		for _, h := range w.clusters.HealthAll(ctx) {
			if key == "" || h.Cluster == key {
				if err := emit(h.Cluster, &pmv1.ClusterInfo{Name: h.Cluster, Health: h.Proto()}, ""); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return fmt.Errorf("watch: no snapshot of %q", kind)
}

// watchError is the connect error a watch ends with. Streams do not pass
// the unary error interceptor, so the mapping is made here: a cursor the
// client must drop is out_of_range (or invalid_argument when malformed),
// a cut-off is resource_exhausted carrying the cursor to resume from
// (also in the Watch-Resume-From trailer), and a client that went away
// ends the stream quietly.
func watchError(ctx context.Context, err error) error {
	var slow *watch.SlowError
	switch {
	case ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ctx.Err())):
		return nil
	case errors.Is(err, watch.ErrBadCursor):
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("resume_from: %w", err))
	case errors.Is(err, watch.ErrExpired):
		return connect.NewError(connect.CodeOutOfRange, fmt.Errorf("resume_from: %w", err))
	case errors.As(err, &slow):
		ce := connect.NewError(connect.CodeResourceExhausted, slow)
		ce.Meta().Set(ResumeFromHeader, slow.Cursor)
		return ce
	case errors.Is(err, watch.ErrUnavailable):
		return connect.NewError(connect.CodeUnavailable, err)
	}
	var ce *connect.Error
	if errors.As(err, &ce) && fault.KindOf(err) == fault.Internal {
		return ce // the stream's own failure (a send to a client that left)
	}
	return ToConnectError(ctx, err)
}

// ResumeFromHeader carries the cursor to resume from on a watch that was
// cut off (a trailer on Connect and gRPC).
const ResumeFromHeader = "Watch-Resume-From"

func eventTypePB(t watch.Type) pmv1.EventType {
	switch t {
	case watch.Snapshot:
		return pmv1.EventType_EVENT_TYPE_SNAPSHOT
	case watch.Synced:
		return pmv1.EventType_EVENT_TYPE_SYNCED
	case watch.Added:
		return pmv1.EventType_EVENT_TYPE_ADDED
	case watch.Changed:
		return pmv1.EventType_EVENT_TYPE_CHANGED
	case watch.Deleted:
		return pmv1.EventType_EVENT_TYPE_DELETED
	case watch.Heartbeat:
		return pmv1.EventType_EVENT_TYPE_HEARTBEAT
	}
	return pmv1.EventType_EVENT_TYPE_UNSPECIFIED
}
