package app_test

// The watch streams as a running PM serves them (issue 14): every
// protocol, both stores, two replicas on one database, resumes, REST
// Server-Sent Events, authentication, and streams outliving the unary
// limits.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	topologypb "github.com/oaas/pm/gen/go/oaas/topology"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/store/pgtest"
)

// event is a watch event of any kind, as the tests compare them.
type event struct {
	Type, Key, Cursor, Revision string
	Object                      proto.Message
}

func (ev event) String() string { return ev.Type + " " + ev.Key }

// events reads one watch stream in the background.
type events struct {
	t    *testing.T
	ch   chan event
	done chan error
	stop context.CancelFunc
}

// watchOf opens a stream with open and converts its messages with conv.
func watchOf[E any](t *testing.T, open func(ctx context.Context) (*connect.ServerStreamForClient[E], error), conv func(*E) event) *events {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := open(ctx)
	if err != nil {
		cancel()
		t.Fatalf("opening the watch: %v", err)
	}
	es := &events{t: t, ch: make(chan event, 1024), done: make(chan error, 1), stop: cancel}
	go func() {
		for stream.Receive() {
			es.ch <- conv(stream.Msg())
		}
		es.done <- stream.Err()
		_ = stream.Close()
	}()
	t.Cleanup(cancel)
	return es
}

func typeName(t pmv1.EventType) string { return strings.TrimPrefix(t.String(), "EVENT_TYPE_") }

func packageEvent(e *pmv1.PackageEvent) event {
	return event{typeName(e.GetType()), e.GetPackage().GetName(), e.GetCursor(), e.GetRevision(), e.GetPackage()}
}

func deploymentEvent(e *pmv1.DeploymentEvent) event {
	return event{typeName(e.GetType()), e.GetDeployment().GetKey(), e.GetCursor(), e.GetRevision(), e.GetDeployment()}
}

func operationEvent(e *pmv1.OperationEvent) event {
	return event{typeName(e.GetType()), e.GetOperation().GetId(), e.GetCursor(), "", e.GetOperation()}
}

func clusterEvent(e *pmv1.ClusterEvent) event {
	return event{typeName(e.GetType()), e.GetCluster().GetName(), e.GetCursor(), "", e.GetCluster()}
}

// next returns the next event that is not a heartbeat.
func (es *events) next() event {
	es.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-es.ch:
			if ev.Type != "HEARTBEAT" {
				return ev
			}
		case err := <-es.done:
			es.t.Fatalf("the watch ended: %v", err)
		case <-timeout:
			es.t.Fatal("no event within 10s")
		}
	}
}

// expect reads events until it has one per want ("ADDED name"); events
// of other objects than the wanted ones are skipped when skip is set.
func (es *events) expect(want ...string) []event {
	es.t.Helper()
	var got []event
	var names []string
	for range want {
		ev := es.next()
		got = append(got, ev)
		names = append(names, ev.String())
	}
	if !slices.Equal(names, want) {
		es.t.Errorf("events %q, want %q", names, want)
	}
	return got
}

// until reads events until one is "what key", returning all read.
func (es *events) until(what string) []event {
	es.t.Helper()
	var got []event
	for {
		ev := es.next()
		got = append(got, ev)
		if ev.String() == what {
			return got
		}
	}
}

// snapshot reads the snapshot: the SNAPSHOT events' keys, and the SYNCED
// cursor.
func (es *events) snapshot() ([]string, string) {
	es.t.Helper()
	var keys []string
	for {
		ev := es.next()
		switch ev.Type {
		case "SNAPSHOT":
			if ev.Cursor != "" {
				es.t.Errorf("snapshot event %s carries cursor %q", ev, ev.Cursor)
			}
			keys = append(keys, ev.Key)
		case "SYNCED":
			if ev.Cursor == "" {
				es.t.Error("SYNCED without a cursor")
			}
			return keys, ev.Cursor
		default:
			es.t.Fatalf("%s before SYNCED", ev)
		}
	}
}

// end waits for the stream to end and returns its error.
func (es *events) end() error {
	es.t.Helper()
	for {
		select {
		case <-es.ch:
		case err := <-es.done:
			return err
		case <-time.After(10 * time.Second):
			es.t.Fatal("the watch did not end within 10s")
		}
	}
}

func TestWatchEveryProtocol(t *testing.T) {
	t.Parallel()
	for _, storage := range storages {
		t.Run(storage, func(t *testing.T) {
			t.Parallel()
			e := setup(t, storage, withDefaultCluster(t))
			e.do("POST", "/api/v1/packages", echoPackage("before")).expect(t, http.StatusCreated)
			for _, p := range protocols {
				t.Run(p.name, func(t *testing.T) {
					c := pmv1connect.NewWatchServiceClient(e.h2c, e.base, p.opts...)
					pkgs := watchOf(t, func(ctx context.Context) (*connect.ServerStreamForClient[pmv1.PackageEvent], error) {
						return c.WatchPackages(ctx, &pmv1.WatchRequest{})
					}, packageEvent)
					have, _ := pkgs.snapshot()
					if !slices.Contains(have, "before") {
						t.Errorf("snapshot %v lacks the package made before", have)
					}
					name := "w-" + p.name
					e.do("POST", "/api/v1/packages", echoPackage(name)).expect(t, http.StatusCreated)
					added := pkgs.expect("ADDED " + name)[0]
					if got := added.Object.(*pmv1.OPackage); len(got.GetClasses()) != 1 || added.Revision != "1" || added.Cursor == "" {
						t.Errorf("ADDED carries %v at revision %q, cursor %q", got, added.Revision, added.Cursor)
					}
					pkg := echoPackage(name)
					pkg["version"] = "2"
					e.do("POST", "/api/v1/packages/"+name, pkg).expect(t, http.StatusOK)
					if ev := pkgs.expect("CHANGED " + name)[0]; ev.Object.(*pmv1.OPackage).GetVersion() != "2" || ev.Revision != "2" {
						t.Errorf("CHANGED carries %v at %q", ev.Object, ev.Revision)
					}
					e.do("DELETE", "/api/v1/packages/"+name, nil).expect(t, http.StatusNoContent)
					if ev := pkgs.expect("DELETED " + name)[0]; !proto.Equal(ev.Object, &pmv1.OPackage{Name: name}) {
						t.Errorf("DELETED carries %v, want the name only", ev.Object)
					}

					// A deployment, its operation, and the cluster it is on.
					deps := watchOf(t, func(ctx context.Context) (*connect.ServerStreamForClient[pmv1.DeploymentEvent], error) {
						return c.WatchDeployments(ctx, &pmv1.WatchRequest{Key: "d-" + p.name})
					}, deploymentEvent)
					if have, _ := deps.snapshot(); len(have) != 0 {
						t.Errorf("snapshot of a deployment not made yet: %v", have)
					}
					ops := watchOf(t, func(ctx context.Context) (*connect.ServerStreamForClient[pmv1.OperationEvent], error) {
						return c.WatchOperations(ctx, &pmv1.WatchRequest{Key: "d-" + p.name})
					}, operationEvent)
					ops.snapshot()
					clusters := watchOf(t, func(ctx context.Context) (*connect.ServerStreamForClient[pmv1.ClusterEvent], error) {
						return c.WatchClusters(ctx, &pmv1.WatchRequest{})
					}, clusterEvent)
					if have, _ := clusters.snapshot(); !slices.Equal(have, []string{"default"}) {
						t.Errorf("cluster snapshot %v", have)
					}
					e.do("POST", "/api/v1/deployments", deployment("d-"+p.name, "before", "default")).expect(t, http.StatusCreated)
					if ev := deps.next(); ev.String() != "ADDED d-"+p.name || ev.Object.(*pmv1.OClassDeployment).GetClassKey() != "Echo" {
						t.Errorf("first deployment event %s: %v", ev, ev.Object)
					}
					var op event
					for op.Type != "CHANGED" || op.Object.(*pmv1.Operation).GetState() != pmv1.OperationState_OPERATION_STATE_SUCCEEDED {
						op = ops.next()
					}
					e.do("DELETE", "/api/v1/deployments/d-"+p.name, nil).expect(t, http.StatusOK)
					deps.until("DELETED d-" + p.name)
				})
			}
		})
	}
}

// TestWatchResumesExactly: a watch resumed from a cursor gets exactly the
// changes made while it was away, then live ones; a cursor PM no longer
// (or never) knew is refused so the client starts over.
func TestWatchResumesExactly(t *testing.T) {
	t.Parallel()
	for _, storage := range storages {
		t.Run(storage, func(t *testing.T) {
			t.Parallel()
			e := setup(t, storage)
			c := pmv1connect.NewWatchServiceClient(e.h2c, e.base)
			open := func(cursor string) *events {
				return watchOf(t, func(ctx context.Context) (*connect.ServerStreamForClient[pmv1.PackageEvent], error) {
					return c.WatchPackages(ctx, &pmv1.WatchRequest{ResumeFrom: cursor})
				}, packageEvent)
			}
			first := open("")
			first.snapshot()
			e.do("POST", "/api/v1/packages", echoPackage("a")).expect(t, http.StatusCreated)
			cursor := first.expect("ADDED a")[0].Cursor
			first.stop()
			first.end()
			for _, n := range []string{"b", "c"} {
				e.do("POST", "/api/v1/packages", echoPackage(n)).expect(t, http.StatusCreated)
			}
			e.do("DELETE", "/api/v1/packages/b", nil).expect(t, http.StatusNoContent)
			resumed := open(cursor)
			// One event per change made while away, each carrying the
			// object as it is now: b, created and deleted meanwhile, is
			// deleted in both of its events.
			resumed.expect("DELETED b", "ADDED c", "DELETED b")
			e.do("POST", "/api/v1/packages", echoPackage("d")).expect(t, http.StatusCreated)
			resumed.expect("ADDED d")

			for _, tc := range []struct {
				cursor string
				code   connect.Code
			}{
				{"not-a-cursor", connect.CodeInvalidArgument},
				{"zz-1", connect.CodeOutOfRange},
				{strings.Split(cursor, "-")[0] + "-999999", connect.CodeOutOfRange},
			} {
				stream, err := c.WatchPackages(context.Background(), &pmv1.WatchRequest{ResumeFrom: tc.cursor})
				if err == nil {
					for stream.Receive() {
					}
					err = stream.Err()
				}
				if connect.CodeOf(err) != tc.code {
					t.Errorf("resume from %q: %v, want %s", tc.cursor, err, tc.code)
				}
			}
		})
	}
}

// TestWatchAcrossReplicas: two PMs on one database; a change committed
// through one reaches a watcher on the other, and a cursor handed out by
// one resumes on the other.
func TestWatchAcrossReplicas(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	onDB := func(c *config.Config) { c.Storage.DatabaseURL = dsn }
	a, b := setup(t, "postgres", onDB), setup(t, "postgres", onDB)
	cb := pmv1connect.NewWatchServiceClient(b.h2c, b.base)
	onB := watchOf(t, func(ctx context.Context) (*connect.ServerStreamForClient[pmv1.PackageEvent], error) {
		return cb.WatchPackages(ctx, &pmv1.WatchRequest{})
	}, packageEvent)
	onB.snapshot()
	begin := time.Now()
	a.do("POST", "/api/v1/packages", echoPackage("via-a")).expect(t, http.StatusCreated)
	cursor := onB.expect("ADDED via-a")[0].Cursor
	t.Logf("committed on A, seen on B after %s", time.Since(begin))

	a.do("POST", "/api/v1/packages", echoPackage("later")).expect(t, http.StatusCreated)
	ca := pmv1connect.NewWatchServiceClient(a.h2c, a.base, connect.WithGRPC())
	onA := watchOf(t, func(ctx context.Context) (*connect.ServerStreamForClient[pmv1.PackageEvent], error) {
		return ca.WatchPackages(ctx, &pmv1.WatchRequest{ResumeFrom: cursor})
	}, packageEvent)
	onA.expect("ADDED later")
	b.do("DELETE", "/api/v1/packages/via-a", nil).expect(t, http.StatusNoContent)
	onA.expect("DELETED via-a")
	onB.expect("ADDED later", "DELETED via-a")
}

// TestWatchRolledBackWriteIsNoEvent: a write PM refuses after it began
// (a package update that would remove a class a deployment uses rolls its
// transaction back) produces no event.
func TestWatchRolledBackWriteIsNoEvent(t *testing.T) {
	t.Parallel()
	for _, storage := range storages {
		t.Run(storage, func(t *testing.T) {
			t.Parallel()
			e := setup(t, storage, withDefaultCluster(t))
			e.do("POST", "/api/v1/packages", echoPackage("p")).expect(t, http.StatusCreated)
			e.do("POST", "/api/v1/deployments", deployment("d", "p", "default")).expect(t, http.StatusCreated)
			c := pmv1connect.NewWatchServiceClient(e.h2c, e.base)
			pkgs := watchOf(t, func(ctx context.Context) (*connect.ServerStreamForClient[pmv1.PackageEvent], error) {
				return c.WatchPackages(ctx, &pmv1.WatchRequest{})
			}, packageEvent)
			pkgs.snapshot()
			without := echoPackage("p")
			without["classes"] = []any{}
			e.do("POST", "/api/v1/packages/p", without).expect(t, http.StatusConflict)
			e.do("POST", "/api/v1/packages", echoPackage("marker")).expect(t, http.StatusCreated)
			pkgs.expect("ADDED marker")
		})
	}
}

// sse is one Server-Sent Event.
type sse struct {
	ID, Event, Data string
	Comment         bool
}

// sseStream reads a REST watch.
type sseStream struct {
	t      *testing.T
	res    *http.Response
	ch     chan sse
	cancel context.CancelFunc
}

// openSSE starts a REST watch; it returns the response when it is not a
// stream.
func openSSE(t *testing.T, client *http.Client, url string, headers ...string) (*sseStream, response) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := client.Do(req) //nolint:bodyclose // closed below, or by the reading goroutine
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		defer cancel()
		defer res.Body.Close()
		var body strings.Builder
		_, _ = bufio.NewReader(res.Body).WriteTo(&body)
		return nil, response{status: res.StatusCode, header: res.Header, body: []byte(body.String())}
	}
	s := &sseStream{t: t, res: res, ch: make(chan sse, 1024), cancel: cancel}
	go func() {
		defer close(s.ch)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		var cur sse
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				s.ch <- cur
				cur = sse{}
			case strings.HasPrefix(line, ":"):
				cur.Comment = true
			case strings.HasPrefix(line, "id: "):
				cur.ID = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "event: "):
				cur.Event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				cur.Data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	t.Cleanup(cancel)
	return s, response{status: res.StatusCode, header: res.Header}
}

// next returns the next event that is not a heartbeat comment.
func (s *sseStream) next() sse {
	s.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-s.ch:
			if !ok {
				s.t.Fatal("the event stream ended")
			}
			if !ev.Comment {
				return ev
			}
		case <-timeout:
			s.t.Fatal("no event within 10s")
		}
	}
}

func (s *sseStream) heartbeat() sse {
	s.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-s.ch:
			if ev.Comment {
				return ev
			}
		case <-timeout:
			s.t.Fatal("no heartbeat within 10s")
		}
	}
}

// object decodes an event's data.
func (ev sse) object(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(ev.Data), &m); err != nil {
		t.Fatalf("event data %q: %v", ev.Data, err)
	}
	return m
}

func TestWatchREST(t *testing.T) {
	t.Parallel()
	for _, storage := range storages {
		t.Run(storage, func(t *testing.T) {
			t.Parallel()
			e := setup(t, storage, withDefaultCluster(t))
			e.do("POST", "/api/v1/packages", echoPackage("before")).expect(t, http.StatusCreated)
			s, res := openSSE(t, e.http1, e.base+"/api/v1/packages?watch=true&heartbeat_seconds=1")
			if ct := res.header.Get("Content-Type"); ct != "text/event-stream" {
				t.Fatalf("content type %q", ct)
			}
			snap := s.next()
			if snap.Event != "SNAPSHOT" || snap.ID != "" || snap.object(t)["name"] != "before" {
				t.Errorf("first event %+v", snap)
			}
			synced := s.next()
			if synced.Event != "SYNCED" || synced.ID == "" || synced.Data != "{}" {
				t.Errorf("second event %+v", synced)
			}
			e.do("POST", "/api/v1/packages", echoPackage("p")).expect(t, http.StatusCreated)
			added := s.next()
			obj := added.object(t)
			// The REST model: snake_case, defaults present, as list items.
			classes, _ := obj["classes"].([]any)
			meta, _ := obj["metadata"].(map[string]any)
			if added.Event != "ADDED" || added.ID == "" || obj["name"] != "p" || len(classes) != 1 || meta["created_at"] == nil {
				t.Errorf("ADDED event %+v", added)
			}
			if cls, _ := classes[0].(map[string]any); cls["function_bindings"] == nil {
				t.Errorf("class without snake_case function_bindings: %v", cls)
			}
			// A heartbeat carries the cursor as its id.
			if hb := s.heartbeat(); hb.ID != added.ID {
				t.Errorf("heartbeat id %q, want %q", hb.ID, added.ID)
			}
			e.do("POST", "/api/v1/packages", echoPackage("q")).expect(t, http.StatusCreated)
			e.do("DELETE", "/api/v1/packages/p", nil).expect(t, http.StatusNoContent)
			s.next()
			if del := s.next(); del.Event != "DELETED" || del.Data != `{"name":"p"}` {
				t.Errorf("DELETED event %+v", del)
			}
			s.cancel()

			// Last-Event-ID resumes after the ADDED p: exactly what followed.
			r, _ := openSSE(t, e.http1, e.base+"/api/v1/packages?watch=true", "Last-Event-ID", added.ID)
			var got []string
			ev := r.next() // the resume's first heartbeat is a comment; skipped
			got = append(got, ev.Event+" "+fmt.Sprint(ev.object(t)["name"]))
			ev = r.next()
			got = append(got, ev.Event+" "+fmt.Sprint(ev.object(t)["name"]))
			if want := []string{"ADDED q", "DELETED p"}; !slices.Equal(got, want) {
				t.Errorf("resumed events %q, want %q", got, want)
			}

			// The other watchable routes.
			e.do("POST", "/api/v1/deployments", deployment("d", "before", "default")).expect(t, http.StatusCreated)
			for _, route := range []string{"/api/v1/deployments?watch=true", "/api/v1/operations?watch=true&deployment_key=d",
				"/api/v1/clusters?watch=true", "/api/v1/envs?watch=1"} {
				w, _ := openSSE(t, e.http1, e.base+route)
				if ev := w.next(); ev.Event != "SNAPSHOT" {
					t.Errorf("%s: first event %+v", route, ev)
				}
				w.cancel()
			}

			// Refusals, before anything streams.
			expired := strings.Split(added.ID, "-")[0] + "-999999"
			for _, tc := range []struct {
				url     string
				headers []string
				status  int
			}{
				{"/api/v1/packages?watch=true", []string{"Last-Event-ID", "garbage"}, http.StatusBadRequest},
				{"/api/v1/packages?watch=true", []string{"Last-Event-ID", expired}, http.StatusGone},
				{"/api/v1/packages?watch=true&resume_from=" + added.ID, []string{"Last-Event-ID", synced.ID}, http.StatusBadRequest},
				{"/api/v1/packages?watch=true&limit=5", nil, http.StatusBadRequest},
				{"/api/v1/packages?watch=maybe", nil, http.StatusBadRequest},
				{"/api/v1/packages?watch=true&heartbeat_seconds=-1", nil, http.StatusBadRequest},
				{"/api/v1/packages?watch=true", []string{"Accept", "application/json"}, http.StatusNotAcceptable},
			} {
				if w, r := openSSE(t, e.http1, e.base+tc.url, tc.headers...); w != nil || r.status != tc.status || r.errorText(t) == "" {
					t.Errorf("GET %s %v: %d %s, want %d", tc.url, tc.headers, r.status, r.body, tc.status)
				}
			}
			// watch=false is the list; watch on a route that has no watch is
			// an unknown parameter like any other.
			var list []map[string]any
			e.do("GET", "/api/v1/packages?watch=false", nil).expect(t, http.StatusOK).json(t, &list)
			if len(list) != 2 {
				t.Errorf("watch=false listed %d packages", len(list))
			}
			if w := e.do("GET", "/api/v1/classes?watch=true", nil).expect(t, http.StatusOK).header.Get("Warning"); !strings.Contains(w, `unknown query parameter \"watch\"`) {
				t.Errorf("watch on /classes: Warning %q", w)
			}
		})
	}
}

// TestWatchNeedsAuthentication: with tokens on, an anonymous watcher is
// refused on every face; a viewer may watch.
func TestWatchNeedsAuthentication(t *testing.T) {
	t.Parallel()
	file, tok := tokens(t, "")
	e := setup(t, "memory", withTokens(file))
	for _, p := range protocols {
		c := pmv1connect.NewWatchServiceClient(e.h2c, e.base, p.opts...)
		stream, err := c.WatchDeployments(context.Background(), &pmv1.WatchRequest{})
		if err == nil {
			for stream.Receive() {
				t.Errorf("%s: an anonymous watcher got %v", p.name, stream.Msg())
			}
			err = stream.Err()
		}
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("%s: anonymous watch: %v", p.name, err)
		}
	}
	if s, r := openSSE(t, e.http1, e.base+"/api/v1/deployments?watch=true"); s != nil || r.status != http.StatusUnauthorized {
		t.Errorf("anonymous REST watch: %d %s", r.status, r.body)
	}
	viewer := &http.Client{Transport: bearerTransport{tok["viewer"], e.h2c.Transport}}
	c := pmv1connect.NewWatchServiceClient(viewer, e.base)
	pkgs := watchOf(t, func(ctx context.Context) (*connect.ServerStreamForClient[pmv1.PackageEvent], error) {
		return c.WatchPackages(ctx, &pmv1.WatchRequest{})
	}, packageEvent)
	pkgs.snapshot()
	e.do("POST", "/api/v1/packages", echoPackage("p"), "Authorization", "Bearer "+tok["editor"]).expect(t, http.StatusCreated)
	pkgs.expect("ADDED p")
	s, _ := openSSE(t, e.http1, e.base+"/api/v1/packages?watch=true", "Authorization", "Bearer "+tok["viewer"])
	if ev := s.next(); ev.Event != "SNAPSHOT" {
		t.Errorf("viewer's REST watch: %+v", ev)
	}
}

type bearerTransport struct {
	token string
	next  http.RoundTripper
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// TestWatchOutlivesUnaryLimits: a watch is not cut by the read timeout or
// the unary request timeout, over HTTP/1.1 or HTTP/2; and shutting PM
// down ends open watches instead of waiting for them.
func TestWatchOutlivesUnaryLimits(t *testing.T) {
	t.Parallel()
	e := setup(t, "memory", func(c *config.Config) {
		c.Server.ReadTimeout, c.Server.RequestTimeout, c.CRM.Timeout = time.Second, time.Second, 500*time.Millisecond
	})
	plain := &http.Client{} // no client timeout
	t.Cleanup(plain.CloseIdleConnections)
	streams := map[string]*events{}
	for name, client := range map[string]*http.Client{"http1": plain, "h2c": e.h2c} {
		c := pmv1connect.NewWatchServiceClient(&http.Client{Transport: client.Transport}, e.base)
		streams[name] = watchOf(t, func(ctx context.Context) (*connect.ServerStreamForClient[pmv1.PackageEvent], error) {
			return c.WatchPackages(ctx, &pmv1.WatchRequest{HeartbeatSeconds: 1})
		}, packageEvent)
		streams[name].snapshot()
	}
	s, _ := openSSE(t, plain, e.base+"/api/v1/packages?watch=true&heartbeat_seconds=1")
	if ev := s.next(); ev.Event != "SYNCED" {
		t.Fatalf("REST: %+v", ev)
	}
	time.Sleep(2500 * time.Millisecond)
	e.do("POST", "/api/v1/packages", echoPackage("late")).expect(t, http.StatusCreated)
	for name, es := range streams {
		if ev := es.next(); ev.String() != "ADDED late" {
			t.Errorf("%s: %s", name, ev)
		}
	}
	if ev := s.next(); ev.Event != "ADDED" {
		t.Errorf("REST: %+v", ev)
	}

	begin := time.Now()
	if err := e.shutdown(); err != nil {
		t.Fatalf("shutdown with open watches: %v", err)
	}
	for name, es := range streams {
		if err := es.end(); connect.CodeOf(err) != connect.CodeUnavailable {
			t.Errorf("%s ended with %v, want unavailable", name, err)
		}
	}
	if d := time.Since(begin); d > 4*time.Second {
		t.Errorf("shutdown took %s with open watches", d)
	}
}

// TestTopology: /api/v1/topology?source=deployments is the console's
// graph of what is deployed, on REST and Connect.
func TestTopology(t *testing.T) {
	t.Parallel()
	f := startFleet(t, "east", "west")
	e := setup(t, "memory", withFleet(f))
	var empty map[string]any
	e.do("GET", "/api/v1/topology?source=deployments", nil).expect(t, http.StatusOK).json(t, &empty)
	if nodes, _ := empty["nodes"].([]any); len(nodes) != 0 {
		t.Errorf("nodes with nothing deployed: %v", empty)
	}
	e.do("POST", "/api/v1/packages", echoPackage("echo-pkg")).expect(t, http.StatusCreated)
	d := deployment("echo-live", "echo-pkg", "east", "west")
	d["odgm"] = map[string]any{"partition_count": 3}
	e.do("POST", "/api/v1/deployments", d).expect(t, http.StatusCreated)
	var g struct {
		Nodes []struct {
			ID              string            `json:"id"`
			NodeType        string            `json:"node_type"`
			Status          string            `json:"status"`
			Metadata        map[string]string `json:"metadata"`
			DeployedClasses []string          `json:"deployed_classes"`
		} `json:"nodes"`
		Edges []struct {
			From string `json:"from_id"`
			To   string `json:"to_id"`
		} `json:"edges"`
		Timestamp struct {
			Seconds json.Number `json:"seconds"`
		} `json:"timestamp"`
	}
	e.do("GET", "/api/v1/topology?source=deployments", nil).expect(t, http.StatusOK).json(t, &g)
	var ids, edges []string
	for _, n := range g.Nodes {
		ids = append(ids, n.ID+"/"+n.NodeType+"/"+n.Status)
		switch n.ID {
		case "class::Echo":
			if n.Metadata["package"] != "echo-pkg" || n.Metadata["partitions"] != "3" {
				t.Errorf("class metadata %v", n.Metadata)
			}
		case "env::east":
			if !slices.Equal(n.DeployedClasses, []string{"Echo"}) {
				t.Errorf("env deployed classes %v", n.DeployedClasses)
			}
		}
	}
	for _, ed := range g.Edges {
		edges = append(edges, ed.From+">"+ed.To)
	}
	want := []string{"package::echo-pkg/package/healthy", "class::Echo/class/healthy", "function::Echo::echo/function/healthy",
		"env::east/environment/healthy", "env::west/environment/healthy"}
	if !slices.Equal(ids, want) {
		t.Errorf("nodes %v, want %v", ids, want)
	}
	wantEdges := []string{"package::echo-pkg>class::Echo", "class::Echo>function::Echo::echo", "class::Echo>env::east", "class::Echo>env::west"}
	if !slices.Equal(edges, wantEdges) {
		t.Errorf("edges %v, want %v", edges, wantEdges)
	}
	if s, err := g.Timestamp.Seconds.Int64(); err != nil || time.Since(time.Unix(s, 0)) > time.Minute {
		t.Errorf("timestamp %q", g.Timestamp.Seconds)
	}
	res, err := pmv1connect.NewTopologyServiceClient(e.h2c, e.base).GetTopology(context.Background(), &topologypb.TopologyRequest{})
	if err != nil || len(res.GetNodes()) != len(want) || len(res.GetEdges()) != len(wantEdges) {
		t.Errorf("Connect GetTopology: %v, %v", res, err)
	}
	if msg := e.do("GET", "/api/v1/topology?source=zenoh", nil).expect(t, http.StatusBadRequest).errorText(t); !strings.Contains(msg, "zenoh") {
		t.Errorf("source=zenoh: %s", msg)
	}
	var ce *connect.Error
	if _, err := pmv1connect.NewTopologyServiceClient(e.h2c, e.base, connect.WithGRPC()).GetTopology(context.Background(),
		&topologypb.TopologyRequest{Source: "zenoh"}); !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument {
		t.Errorf("gRPC source=zenoh: %v", err)
	}
}
