package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"github.com/sony/gobreaker/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	"github.com/oaas/pm/gen/go/oaas/deployment/deploymentconnect"
	"github.com/oaas/pm/gen/go/oaas/health/healthconnect"
	runtimepb "github.com/oaas/pm/gen/go/oaas/runtime"
	"github.com/oaas/pm/gen/go/oaas/topology/topologyconnect"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/correlation"
	"github.com/oaas/pm/internal/fault"
)

// retryBase is the first backoff between read retries; later ones grow
// linearly. Reads are cheap and a CRM blip is short, so it stays small.
const retryBase = 50 * time.Millisecond

// retryCap bounds one backoff step.
const retryCap = time.Second

// Client is one cluster's CRM client. Every call carries a per-call deadline
// (the cluster timeout, or the caller's earlier one) and the caller's
// x-correlation-id (or a new one), and goes through the cluster's circuit
// breaker. Errors are fault errors whose messages name the cluster.
type Client struct {
	name      string
	url       string
	timeout   time.Duration
	retries   int
	log       *slog.Logger
	transport *http.Transport
	breaker   *gobreaker.CircuitBreaker[struct{}]

	deploy     deploymentconnect.DeploymentServiceClient
	crmInfo    healthconnect.CrmInfoServiceClient
	oaasHealth healthconnect.HealthServiceClient
	grpcHealth *grpchealth.Client
	topology   topologyconnect.TopologyServiceClient
	// rawList and rawGet read ListClassRuntimes and GetClassRuntime answers
	// undecoded (an Empty keeps every field as unknown bytes), because the
	// generations put different messages at the same field (readList).
	rawList *connect.Client[deploymentpb.ListClassRuntimesRequest, emptypb.Empty]
	rawGet  *connect.Client[deploymentpb.GetClassRuntimeRequest, emptypb.Empty]

	gen genState
}

// newClient builds the connect clients of one cluster over its own transport,
// so one cluster's connections, breaker and failures never affect another.
func newClient(cl config.Cluster, cfg config.CRM, log *slog.Logger, extra ...connect.Interceptor) (*Client, error) {
	t, err := newTransport(cl)
	if err != nil {
		return nil, err
	}
	c := &Client{
		name:      cl.Name,
		url:       cl.URL,
		timeout:   cfg.Timeout,
		retries:   cfg.RetryAttempts,
		log:       log.With(slog.String("cluster", cl.Name)),
		transport: t,
	}
	if cl.Generation != 0 {
		c.gen = genState{gen: Generation(cl.Generation), source: GenerationPinned, pinned: true}
	}
	threshold := uint32(cfg.BreakerFailureThreshold) //nolint:gosec // validated ≥ 1 by New
	c.breaker = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:    cl.Name,
		Timeout: cfg.BreakerTimeout,
		ReadyToTrip: func(counts gobreaker.Counts) bool {
			return counts.ConsecutiveFailures >= threshold
		},
		IsSuccessful: crmAnswered,
		IsExcluded:   callerGaveUp,
		OnStateChange: func(_ string, from, to gobreaker.State) {
			level := slog.LevelInfo
			if to == gobreaker.StateOpen {
				level = slog.LevelWarn
			}
			c.log.Log(context.Background(), level, "CRM circuit breaker changed state",
				slog.String("from", from.String()), slog.String("to", to.String()))
		},
	})
	httpClient := &http.Client{Transport: t}
	opts := []connect.ClientOption{
		connect.WithGRPC(),
		connect.WithInterceptors(append([]connect.Interceptor{correlationInterceptor()}, extra...)...),
	}
	base := cl.URL
	c.deploy = deploymentconnect.NewDeploymentServiceClient(httpClient, base, opts...)
	c.crmInfo = healthconnect.NewCrmInfoServiceClient(httpClient, base, opts...)
	c.oaasHealth = healthconnect.NewHealthServiceClient(httpClient, base, opts...)
	c.grpcHealth = grpchealth.NewClient(httpClient, base, opts...)
	c.topology = topologyconnect.NewTopologyServiceClient(httpClient, base, opts...)
	c.rawList = connect.NewClient[deploymentpb.ListClassRuntimesRequest, emptypb.Empty](
		httpClient, base+deploymentconnect.DeploymentServiceListClassRuntimesProcedure, opts...)
	c.rawGet = connect.NewClient[deploymentpb.GetClassRuntimeRequest, emptypb.Empty](
		httpClient, base+deploymentconnect.DeploymentServiceGetClassRuntimeProcedure, opts...)
	return c, nil
}

// correlationInterceptor sends the context's correlation id (call makes sure
// there is one) as x-correlation-id, which field CRMs log and echo.
func correlationInterceptor() connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if id := correlation.From(ctx); id != "" {
				req.Header().Set(correlation.Header, id)
			}
			return next(ctx, req)
		}
	}
}

// crmAnswered tells the breaker which errors still prove the CRM alive: it
// answered, and the answer is about the request (unknown id, bad input, an
// older CRM without a health service), not about its own state.
func crmAnswered(err error) bool {
	if err == nil {
		return true
	}
	switch connect.CodeOf(err) {
	case connect.CodeNotFound, connect.CodeInvalidArgument, connect.CodeAlreadyExists,
		connect.CodeFailedPrecondition, connect.CodeUnimplemented, connect.CodeOutOfRange:
		return true
	}
	return false
}

// callerGaveUp keeps calls that ended because the caller canceled them or
// its own (earlier) deadline ran out out of the breaker's counts: they say
// nothing about the CRM. A CRM that misses PM's timeout still counts.
func callerGaveUp(err error) bool {
	var ended callerEnded
	return errors.As(err, &ended) || connect.CodeOf(err) == connect.CodeCanceled
}

// callerEnded marks a call error that happened after the caller's context
// ended; it is transparent to errors.Is/As and connect.CodeOf.
type callerEnded struct{ error }

// Unwrap returns the call error.
func (e callerEnded) Unwrap() error { return e.error }

// Name is the cluster's configured name.
func (c *Client) Name() string { return c.name }

// URL is the CRM's configured URL.
func (c *Client) URL() string { return c.url }

// BreakerState is the circuit breaker's state ("closed", "half-open" or
// "open"), for logs, metrics and tests.
func (c *Client) BreakerState() string { return c.breaker.State().String() }

// Deploy sends one deployment unit, shaped for the CRM's generation
// (UnitFor). It is not retried here: the deploy policy retries with the same
// unit id, which the CRM treats idempotently.
func (c *Client) Deploy(ctx context.Context, unit *deploymentpb.DeploymentUnit) (*deploymentpb.DeployResponse, error) {
	unit = UnitFor(c.generationForDeploy(ctx), unit)
	return call(ctx, c, "deploy", false, func(ctx context.Context) (*deploymentpb.DeployResponse, error) {
		return c.deploy.Deploy(ctx, &deploymentpb.DeployRequest{DeploymentUnit: unit})
	})
}

// Delete removes a deployment unit. It is not retried (the caller decides);
// an unknown id is fault.NotFound.
func (c *Client) Delete(ctx context.Context, id string) (*deploymentpb.DeleteDeploymentResponse, error) {
	return call(ctx, c, "delete", false, func(ctx context.Context) (*deploymentpb.DeleteDeploymentResponse, error) {
		return c.deploy.DeleteDeployment(ctx, &deploymentpb.DeleteDeploymentRequest{DeploymentId: id})
	})
}

// Status reads a unit's deployment status, retrying transient failures
// (unavailable, timed out) up to CRM_DEFAULT_RETRY_ATTEMPTS times. Both
// generations answer it alike.
func (c *Client) Status(ctx context.Context, id string) (*deploymentpb.GetDeploymentStatusResponse, error) {
	return call(ctx, c, "status", true, func(ctx context.Context) (*deploymentpb.GetDeploymentStatusResponse, error) {
		return c.deploy.GetDeploymentStatus(ctx, &deploymentpb.GetDeploymentStatusRequest{DeploymentId: id})
	})
}

// List lists the class runtimes the CRM runs (nil req: all of them) as the
// first generation answers, whichever generation the CRM speaks: a
// second-generation summary becomes a unit with its id, package, class,
// environment and creation time (Runtime.Unit). Transient failures are
// retried like Status.
func (c *Client) List(ctx context.Context, req *deploymentpb.ListClassRuntimesRequest) (*deploymentpb.ListClassRuntimesResponse, error) {
	rs, err := c.Runtimes(ctx, req)
	if err != nil {
		return nil, err
	}
	out := &deploymentpb.ListClassRuntimesResponse{Items: make([]*deploymentpb.DeploymentUnit, len(rs))}
	for i, r := range rs {
		out.Items[i] = r.Unit
	}
	return out, nil
}

// Get reads one class runtime as the first generation answers (see List),
// retrying transient failures like Status; an unknown id is fault.NotFound.
func (c *Client) Get(ctx context.Context, id string) (*deploymentpb.GetClassRuntimeResponse, error) {
	r, err := c.runtime(ctx, id)
	if err != nil {
		return nil, err
	}
	out := &deploymentpb.GetClassRuntimeResponse{}
	if r != nil {
		out.Deployment = r.Unit
	}
	return out, nil
}

// Runtimes lists the class runtimes the CRM runs (nil req: all of them) in
// PM's vocabulary, whichever generation the CRM speaks. A second-generation
// CRM ignores the package, class and environment filters, so with any of
// them the list is filtered (and paged) here.
func (c *Client) Runtimes(ctx context.Context, req *deploymentpb.ListClassRuntimesRequest) ([]Runtime, error) {
	if req == nil {
		req = &deploymentpb.ListClassRuntimesRequest{}
	}
	gen, _ := c.Generation()
	rs, got, err := c.readList(ctx, shapeList(gen, req))
	if err != nil {
		return nil, err
	}
	if got == Generation2 && gen != Generation2 && identityFiltered(req) {
		// The generation showed only in this answer, which the CRM made
		// without the filters and paged before them: ask again, as the
		// second generation must be asked.
		if rs, got, err = c.readList(ctx, shapeList(got, req)); err != nil {
			return nil, err
		}
	}
	if got == Generation2 && identityFiltered(req) {
		rs = filterPage(rs, req)
	}
	return rs, nil
}

// Runtime reads one class runtime in PM's vocabulary (see Runtimes),
// retrying transient failures like Status; an unknown id, or an answer
// without a runtime, is fault.NotFound.
func (c *Client) Runtime(ctx context.Context, id string) (Runtime, error) {
	r, err := c.runtime(ctx, id)
	if err != nil {
		return Runtime{}, err
	}
	if r == nil {
		return Runtime{}, fault.NotFoundf("cluster %q: class runtime %q not found", c.name, id)
	}
	return *r, nil
}

// runtime reads one runtime; nil when the CRM answered without one.
func (c *Client) runtime(ctx context.Context, id string) (*Runtime, error) {
	raw, err := call(ctx, c, "get", true, func(ctx context.Context) (*emptypb.Empty, error) {
		res, err := c.rawGet.CallUnary(ctx, connect.NewRequest(&deploymentpb.GetClassRuntimeRequest{DeploymentId: id}))
		if err != nil {
			return nil, err
		}
		return res.Msg, nil
	})
	if err != nil {
		return nil, err
	}
	b := raw.ProtoReflect().GetUnknown()
	gen := c.decodeAs(ctx, "get", b)
	if gen == Generation2 {
		var m runtimepb.GetClassRuntimeResponseV2
		if err := proto.Unmarshal(b, &m); err != nil {
			return nil, c.undecodable(ctx, "get", gen, err)
		}
		if m.Deployment == nil {
			return nil, nil
		}
		r := runtimeFromSummary(c.name, m.GetDeployment())
		return &r, nil
	}
	var m deploymentpb.GetClassRuntimeResponse
	if err := proto.Unmarshal(b, &m); err != nil {
		return nil, c.undecodable(ctx, "get", gen, err)
	}
	if m.Deployment == nil {
		return nil, nil
	}
	r := runtimeFromUnit(c.name, m.GetDeployment())
	return &r, nil
}

// readList makes one ListClassRuntimes call and decodes its answer with the
// generation's schema; it returns the generation it decoded with.
func (c *Client) readList(ctx context.Context, req *deploymentpb.ListClassRuntimesRequest) ([]Runtime, Generation, error) {
	raw, err := call(ctx, c, "list", true, func(ctx context.Context) (*emptypb.Empty, error) {
		res, err := c.rawList.CallUnary(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		return res.Msg, nil
	})
	if err != nil {
		return nil, GenerationUnknown, err
	}
	b := raw.ProtoReflect().GetUnknown()
	gen := c.decodeAs(ctx, "list", b)
	if gen == Generation2 {
		var m runtimepb.ListClassRuntimesResponseV2
		if err := proto.Unmarshal(b, &m); err != nil {
			return nil, gen, c.undecodable(ctx, "list", gen, err)
		}
		out := make([]Runtime, len(m.GetItems()))
		for i, s := range m.GetItems() {
			out[i] = runtimeFromSummary(c.name, s)
		}
		return out, gen, nil
	}
	var m deploymentpb.ListClassRuntimesResponse
	if err := proto.Unmarshal(b, &m); err != nil {
		return nil, gen, c.undecodable(ctx, "list", gen, err)
	}
	out := make([]Runtime, len(m.GetItems()))
	for i, u := range m.GetItems() {
		out[i] = runtimeFromUnit(c.name, u)
	}
	return out, Generation1, nil
}

// decodeAs picks the schema for an encoded list or get answer: the pinned
// generation; otherwise what the answer's items show when they show it
// (recorded for the cluster: the items are the wire's own evidence, and
// beat an inference), else the generation detected before; unknown reads as
// the first generation, the contract PM was built on.
func (c *Client) decodeAs(ctx context.Context, op string, b []byte) Generation {
	c.gen.mu.Lock()
	gen, pinned := c.gen.gen, c.gen.pinned
	c.gen.mu.Unlock()
	if pinned {
		return gen
	}
	if seen := classifyResponse(b); seen != GenerationUnknown {
		if seen != gen {
			c.gen.learn(seen, GenerationFromListItems)
			c.log.InfoContext(ctx, "CRM generation taken from its answer", slog.String("op", op),
				slog.String("generation", seen.String()), slog.String("was", gen.String()))
		}
		return seen
	}
	if gen == GenerationUnknown {
		return Generation1
	}
	return gen
}

// undecodable is the error for an answer the generation's schema rejects.
func (c *Client) undecodable(ctx context.Context, op string, gen Generation, err error) error {
	c.log.WarnContext(ctx, "CRM answer does not decode", slog.String("op", op),
		slog.String("generation", gen.String()), slog.String("error", err.Error()),
		slog.String("correlation_id", correlation.From(ctx)))
	return fault.Wrap(fault.Unavailable, err, "cluster %q: the CRM's %s answer does not decode as generation %s", c.name, op, gen)
}

// identityFiltered reports whether req filters by package, class or
// environment, the filters second-generation CRMs ignore.
func identityFiltered(req *deploymentpb.ListClassRuntimesRequest) bool {
	return req.PackageName != nil || req.ClassKey != nil || req.TargetEnv != nil
}

// shapeList is req as generation gen should be asked: a second-generation
// CRM, which ignores the identity filters, is asked for everything the
// status filter matches, unpaged, so that filterPage can filter and page.
func shapeList(gen Generation, req *deploymentpb.ListClassRuntimesRequest) *deploymentpb.ListClassRuntimesRequest {
	if gen != Generation2 || !identityFiltered(req) {
		return req
	}
	return &deploymentpb.ListClassRuntimesRequest{Status: req.Status}
}

// filterPage applies req's identity filters, offset and limit to rs. The
// class filter matches PM's class key or the qualified one.
func filterPage(rs []Runtime, req *deploymentpb.ListClassRuntimesRequest) []Runtime {
	out := rs[:0:0]
	for _, r := range rs {
		if req.PackageName != nil && r.PackageName != req.GetPackageName() ||
			req.ClassKey != nil && r.ClassKey != req.GetClassKey() && r.PackageName+"."+r.ClassKey != req.GetClassKey() ||
			req.TargetEnv != nil && r.TargetEnvironment != req.GetTargetEnv() {
			continue
		}
		out = append(out, r)
	}
	out = out[min(int(req.GetOffset()), len(out)):]
	if req.Limit != nil && req.GetLimit() > 0 && int(req.GetLimit()) < len(out) {
		out = out[:req.GetLimit()]
	}
	return out
}

// call runs fn with the client's policy: a correlation id, the breaker, and
// for idempotent reads up to c.retries retries of transient failures with a
// short linear backoff. All attempts share one deadline, CRM_DEFAULT_TIMEOUT:
// retries help against a CRM that fails fast, and a CRM that hangs holds the
// caller no longer than one timeout. The error is a fault error.
func call[T any](ctx context.Context, c *Client, op string, retry bool, fn func(context.Context) (T, error)) (T, error) {
	ctx, _ = correlation.Ensure(ctx)
	attempts := 1
	if retry {
		attempts += c.retries
	}
	var (
		res T
		err error
	)
	deadline := time.Now().Add(c.timeout)
	for attempt := 0; attempt < attempts; attempt++ {
		if attempt > 0 {
			wait := backoff(attempt)
			if time.Until(deadline) < wait+minAttempt || !sleep(ctx, wait) {
				break
			}
		}
		res, err = once(ctx, c, time.Until(deadline), fn)
		if err == nil {
			return res, nil
		}
		if !transient(err) || ctx.Err() != nil {
			break
		}
		c.log.Debug("CRM read failed; retrying", slog.String("op", op), slog.Int("attempt", attempt+1),
			slog.String("error", err.Error()), slog.String("correlation_id", correlation.From(ctx)))
	}
	var zero T
	return zero, c.fault(ctx, op, err)
}

// minAttempt is the least time worth starting a retry with.
const minAttempt = 50 * time.Millisecond

// once makes one attempt through the breaker under limit.
func once[T any](ctx context.Context, c *Client, limit time.Duration, fn func(context.Context) (T, error)) (T, error) {
	var res T
	_, err := c.breaker.Execute(func() (struct{}, error) {
		// When the caller's own deadline is the earlier one, a deadline
		// error is the caller's, even if the CRM (honouring grpc-timeout)
		// reported it a moment before the caller's context noticed.
		dl, has := ctx.Deadline()
		callerFirst := has && dl.Before(time.Now().Add(limit))
		cctx, cancel := context.WithTimeout(ctx, limit)
		defer cancel()
		var err error
		res, err = fn(cctx)
		if err != nil && (ctx.Err() != nil || callerFirst && connect.CodeOf(err) == connect.CodeDeadlineExceeded) {
			err = callerEnded{err}
		}
		return struct{}{}, err
	})
	return res, err
}

// transient reports whether a failed read is worth repeating: the CRM was
// unreachable or slow. An open breaker is not: it already knows the answer.
func transient(err error) bool {
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return false
	}
	code := connect.CodeOf(err)
	return code == connect.CodeUnavailable || code == connect.CodeDeadlineExceeded
}

// backoff is the wait before retry number attempt (1-based): linear with up
// to 50% jitter, so retries of many callers do not arrive in lockstep.
func backoff(attempt int) time.Duration {
	d := min(retryBase*time.Duration(attempt), retryCap)
	return d + rand.N(d/2+1) //nolint:gosec // jitter needs no cryptographic randomness
}

// sleep waits d unless ctx ends first; it reports whether the wait completed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// fault turns a CRM call error into a client-safe fault error naming the
// cluster, and logs the detail with the correlation id.
func (c *Client) fault(ctx context.Context, op string, err error) error {
	kind, reason := classify(err, c.timeout)
	c.log.Debug("CRM call failed", slog.String("op", op), slog.String("kind", kind.String()),
		slog.String("error", err.Error()), slog.String("correlation_id", correlation.From(ctx)))
	return fault.Wrap(kind, err, "cluster %q: %s", c.name, reason)
}

// classify maps a CRM call error to a fault kind and a short, client-safe
// reason: the CRM's own message for answers about the request, a fixed text
// for PM-side conditions.
func classify(err error, timeout time.Duration) (fault.Kind, string) {
	switch {
	case errors.Is(err, gobreaker.ErrOpenState):
		return fault.Unavailable, "circuit breaker open"
	case errors.Is(err, gobreaker.ErrTooManyRequests):
		return fault.Unavailable, "circuit breaker half-open; a probe call is in flight"
	}
	if ended := (callerEnded{}); errors.As(err, &ended) && connect.CodeOf(err) == connect.CodeDeadlineExceeded {
		return fault.DeadlineExceeded, "the request's deadline ran out before the CRM answered"
	}
	var ce *connect.Error
	msg := err.Error()
	if errors.As(err, &ce) {
		msg = ce.Message()
	}
	switch connect.CodeOf(err) {
	case connect.CodeNotFound:
		return fault.NotFound, "not found: " + msg
	case connect.CodeInvalidArgument, connect.CodeOutOfRange:
		return fault.Invalid, "CRM rejected the request: " + msg
	case connect.CodeAlreadyExists:
		return fault.AlreadyExists, "already exists: " + msg
	case connect.CodeFailedPrecondition, connect.CodeAborted:
		return fault.Conflict, "CRM refused the request: " + msg
	case connect.CodeDeadlineExceeded:
		return fault.DeadlineExceeded, fmt.Sprintf("CRM did not answer in time (limit %s)", timeout)
	case connect.CodeCanceled:
		return fault.Unavailable, "CRM call canceled"
	case connect.CodeUnimplemented:
		return fault.Unavailable, "CRM does not implement the call: " + msg
	case connect.CodeUnavailable:
		return fault.Unavailable, "CRM unavailable: " + msg
	}
	return fault.Unavailable, "CRM failed: " + msg
}
