// Package telemetry exposes PM's Prometheus metrics: API calls by procedure
// and code, and counters of the deploy machinery (resumed operations,
// retries, rollbacks, self-heals, orphans) that operators alert on.
package telemetry

import (
	"context"
	"errors"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is PM's metric registry.
type Metrics struct {
	reg      *prometheus.Registry
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// New returns a registry with Go runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pm_api_requests_total",
			Help: "API calls by procedure and result code (all protocols, REST included).",
		}, []string{"procedure", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pm_api_request_duration_seconds",
			Help:    "API call latency by procedure.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"procedure"}),
	}
	m.reg.MustRegister(m.calls, m.duration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Interceptor counts and times every unary call.
func (m *Metrics) Interceptor() connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			start := time.Now()
			res, err := next(ctx, req)
			code := "ok"
			if err != nil {
				code = connect.CodeOf(err).String()
			}
			proc := req.Spec().Procedure
			m.calls.WithLabelValues(proc, code).Inc()
			m.duration.WithLabelValues(proc).Observe(time.Since(start).Seconds())
			return res, err
		}
	}
}

// Counters registers monotonic counters read from fn at scrape time, one
// per key, named pm_<prefix>_<key>_total.
func (m *Metrics) Counters(prefix, help string, keys []string, fn func() map[string]int64) error {
	var errs []error
	for _, k := range keys {
		c := prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "pm_" + prefix + "_" + k + "_total",
			Help: help + " (" + k + ")",
		}, func() float64 { return float64(fn()[k]) })
		errs = append(errs, m.reg.Register(c))
	}
	return errors.Join(errs...)
}

// Gauge registers a gauge read from fn at scrape time.
func (m *Metrics) Gauge(name, help string, fn func() float64) error {
	return m.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, fn))
}
