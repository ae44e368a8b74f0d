package cluster

import (
	"context"
	"errors"
	"strings"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"google.golang.org/protobuf/types/known/timestamppb"

	healthpb "github.com/oaas/pm/gen/go/oaas/health"
	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/correlation"
)

// The health statuses PM reports, as the REST model spells them.
const (
	// StatusHealthy means the CRM reports its cluster healthy (or SERVING).
	StatusHealthy = "Healthy"
	// StatusDegraded means the CRM reports its cluster degraded.
	StatusDegraded = "Degraded"
	// StatusUnhealthy means the CRM reports its cluster unhealthy
	// (NOT_SERVING), or PM could not reach it.
	StatusUnhealthy = "Unhealthy"
	// StatusUnknown means the CRM answered without saying.
	StatusUnknown = "Unknown"
)

// The sources a Health can come from, most detailed first.
const (
	// SourceCRMInfo is oaas.health.CrmInfoService/GetEnvHealth, which carries
	// node counts and availability.
	SourceCRMInfo = "oaas.health.CrmInfoService"
	// SourceOaasHealth is oaas.health.HealthService/Check, which older field
	// CRMs serve.
	SourceOaasHealth = "oaas.health.HealthService"
	// SourceGRPCHealth is grpc.health.v1.Health/Check, which other CRM
	// implementations serve.
	SourceGRPCHealth = "grpc.health.v1.Health"
)

// Health is one cluster's health as PM last learned it from its CRM.
type Health struct {
	// Cluster is the configured cluster name.
	Cluster string
	// Status is one of the Status constants (or, verbatim, a status string
	// a CRM sent that PM does not know).
	Status string
	// CRMVersion is the CRM's version, when it reports one.
	CRMVersion *string
	// LastSeen is when the CRM last answered a health check; zero if never.
	LastSeen time.Time
	// NodeCount and ReadyNodes are the cluster's nodes, when reported.
	NodeCount, ReadyNodes *uint32
	// Availability is the CRM's availability signal in [0,1], unchanged.
	Availability *float64
	// Message says why a cluster is not healthy (unreachable, timed out,
	// circuit breaker open, ...); empty when it answered.
	Message string
	// Source is the health service that answered (a Source constant); empty
	// when none did.
	Source string
	// Generation is the CRM wire generation PM reads the cluster with, as
	// known after this check; GenerationSource says how it was learned (a
	// Generation* constant, "" while unknown).
	Generation       Generation
	GenerationSource string
}

// Proto is the API view of h.
func (h Health) Proto() *pmv1.ClusterHealth {
	p := &pmv1.ClusterHealth{
		ClusterName:  h.Cluster,
		Status:       h.Status,
		CrmVersion:   h.CRMVersion,
		NodeCount:    h.NodeCount,
		ReadyNodes:   h.ReadyNodes,
		Availability: h.Availability,
	}
	if !h.LastSeen.IsZero() {
		p.LastSeen = timestamppb.New(h.LastSeen)
	} else {
		// Never answered: the model has no "never", so last_seen is the
		// epoch, which no client mistakes for a recent answer.
		p.LastSeen = &timestamppb.Timestamp{}
	}
	if h.Message != "" {
		msg := h.Message
		p.Message = &msg
	}
	return p
}

// Rank orders statuses for placement: healthy first (0), then degraded (1),
// then everything that cannot take work (2).
func Rank(status string) int {
	switch status {
	case StatusHealthy:
		return 0
	case StatusDegraded:
		return 1
	}
	return 2
}

// normalizeStatus maps a CRM status string onto PM's spelling; an empty one
// is Unknown and one PM does not know is kept verbatim.
func normalizeStatus(s string) string {
	s = strings.TrimSpace(s)
	for _, known := range []string{StatusHealthy, StatusDegraded, StatusUnhealthy, StatusUnknown} {
		if strings.EqualFold(s, known) {
			return known
		}
	}
	if s == "" {
		return StatusUnknown
	}
	return s
}

// probe asks the CRM for its health down the fallback chain: GetEnvHealth,
// then oaas.health.HealthService/Check, then grpc.health.v1.Health/Check,
// each tried only when the previous one is unimplemented. A failure is not an
// error: the cluster is Unhealthy and Message says why. The CRM's generation
// is (re)detected along with it when needed (observeHealth).
func (c *Client) probe(ctx context.Context) Health {
	ctx, _ = correlation.Ensure(ctx)
	return c.observeHealth(ctx, c.check(ctx))
}

// check runs the fallback chain of probe.
func (c *Client) check(ctx context.Context) Health {
	h, err := c.envHealth(ctx)
	if unimplemented(err) {
		h, err = c.oaasCheck(ctx)
	}
	if unimplemented(err) {
		h, err = c.grpcCheck(ctx)
	}
	if unimplemented(err) {
		return Health{Cluster: c.name, Status: StatusUnknown, Message: "CRM serves no health service"}
	}
	if err != nil {
		_, reason := classify(err, c.timeout)
		return Health{Cluster: c.name, Status: StatusUnhealthy, Message: reason}
	}
	h.Cluster = c.name
	return h
}

// unimplemented reports whether the CRM lacks the service asked for.
func unimplemented(err error) bool {
	return err != nil && connect.CodeOf(err) == connect.CodeUnimplemented
}

func (c *Client) envHealth(ctx context.Context) (Health, error) {
	res, err := once(ctx, c, c.timeout, func(ctx context.Context) (*healthpb.CrmEnvHealth, error) {
		// The empty env asks the CRM about its own environment, whatever
		// name PM gives the cluster.
		return c.crmInfo.GetEnvHealth(ctx, &healthpb.CrmEnvRequest{})
	})
	if err != nil {
		return Health{}, err
	}
	seen := time.Now()
	if ts := res.GetLastSeen(); ts != nil && (ts.GetSeconds() != 0 || ts.GetNanos() != 0) {
		seen = time.Unix(ts.GetSeconds(), int64(ts.GetNanos())).UTC()
	}
	return Health{
		Status:       normalizeStatus(res.GetStatus()),
		CRMVersion:   res.CrmVersion,
		LastSeen:     seen,
		NodeCount:    res.NodeCount,
		ReadyNodes:   res.ReadyNodes,
		Availability: res.Availability,
		Source:       SourceCRMInfo,
	}, nil
}

func (c *Client) oaasCheck(ctx context.Context) (Health, error) {
	res, err := once(ctx, c, c.timeout, func(ctx context.Context) (*healthpb.HealthCheckResponse, error) {
		return c.oaasHealth.Check(ctx, &healthpb.HealthCheckRequest{})
	})
	if err != nil {
		return Health{}, err
	}
	status := StatusUnknown
	switch res.GetStatus() {
	case healthpb.HealthCheckResponse_SERVING:
		status = StatusHealthy
	case healthpb.HealthCheckResponse_NOT_SERVING:
		status = StatusUnhealthy
	}
	return Health{Status: status, LastSeen: time.Now(), Source: SourceOaasHealth}, nil
}

func (c *Client) grpcCheck(ctx context.Context) (Health, error) {
	res, err := once(ctx, c, c.timeout, func(ctx context.Context) (*grpchealth.CheckResponse, error) {
		return c.grpcHealth.Check(ctx, &grpchealth.CheckRequest{})
	})
	if err != nil {
		return Health{}, err
	}
	status := StatusUnknown
	switch res.Status {
	case grpchealth.StatusServing:
		status = StatusHealthy
	case grpchealth.StatusNotServing:
		status = StatusUnhealthy
	}
	return Health{Status: status, LastSeen: time.Now(), Source: SourceGRPCHealth}, nil
}

// errNoAnswer is the reason given to a caller that stopped waiting before
// the health check it joined finished.
var errNoAnswer = errors.New("health check still running when the request ended")
