package crmsim

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/oaas/pm/gen/go/oaas/health/healthconnect"
)

// interceptor applies the knobs every CRM call shares (counting, correlation
// echo, disabled services, latency, hang, random failures) in one place, so
// the handlers only hold the CRM's behaviour. With passive set (reflection) it
// only ties streams to the simulator's lifetime.
type interceptor struct {
	s       *Sim
	passive bool
}

// WrapUnary implements connect.Interceptor.
func (i *interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	if i.passive {
		return next
	}
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		var respHeader http.Header
		if info, ok := connect.CallInfoForHandlerContext(ctx); ok {
			respHeader = info.ResponseHeader()
		}
		start := time.Now()
		procedure := req.Spec().Procedure
		res, err := i.admit(ctx, procedure, req.Header(), respHeader)
		if err == nil {
			res, err = next(ctx, req)
		}
		i.s.logCall(ctx, procedure, req.Header().Get(CorrelationHeader), start, err)
		return res, err
	}
}

// WrapStreamingClient implements connect.Interceptor; the simulator has no clients.
func (i *interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler implements connect.Interceptor. Streams also end when
// the simulator closes, or a Watch would hold Close for its whole timeout.
func (i *interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		procedure := conn.Spec().Procedure
		var err error
		if !i.passive {
			_, err = i.admit(ctx, procedure, conn.RequestHeader(), conn.ResponseHeader())
		}
		if err == nil {
			ctx, cancel := context.WithCancel(ctx)
			stop := context.AfterFunc(i.s.closingCtx, cancel)
			err = next(ctx, conn)
			stop()
			cancel()
		}
		if !i.passive {
			i.s.logCall(ctx, procedure, conn.RequestHeader().Get(CorrelationHeader), start, err)
		}
		return err
	}
}

// admit counts the call, echoes its correlation id and applies the fault
// knobs; a non-nil error is the call's answer. The response is always nil:
// the return shape only lets WrapUnary chain it.
func (i *interceptor) admit(ctx context.Context, procedure string, reqHeader, respHeader http.Header) (connect.AnyResponse, error) {
	s := i.s
	corr := reqHeader.Get(CorrelationHeader)
	if corr != "" && respHeader != nil {
		respHeader.Set(CorrelationHeader, corr)
	}

	s.mu.Lock()
	s.calls[procedure]++
	if corr != "" {
		s.lastCorrelID = corr
	}
	cfg := s.cfg
	disabled := (cfg.DisableCrmInfo && procedure == healthconnect.CrmInfoServiceGetEnvHealthProcedure) ||
		(cfg.DisableOaasHealth && (procedure == healthconnect.HealthServiceCheckProcedure ||
			procedure == healthconnect.HealthServiceWatchProcedure))
	fail := false
	if !disabled && cfg.FailRate > 0 {
		fail = s.rng.Float64() < cfg.FailRate
	}
	s.mu.Unlock()

	// A server without the service answers at once, before any slowness.
	if disabled {
		return nil, connect.NewError(connect.CodeUnimplemented, errors.New("unknown service or method "+procedure))
	}
	if cfg.Latency > 0 {
		timer := time.NewTimer(cfg.Latency)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			return nil, ctxError(ctx)
		case <-s.closingCtx.Done():
			return nil, shuttingDown()
		}
	}
	if cfg.Hang {
		select {
		case <-ctx.Done():
			return nil, ctxError(ctx)
		case <-s.closingCtx.Done():
			return nil, shuttingDown()
		}
	}
	if fail {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("simulated transient failure (fail rate)"))
	}
	return nil, nil
}

// shuttingDown is what a call waiting in the simulator gets when it closes;
// gRPC clients see the same code from a server that goes away.
func shuttingDown() error {
	return connect.NewError(connect.CodeUnavailable, errors.New("crm simulator is shutting down"))
}

// ctxError turns the end of a call's context into the status gRPC gives it.
func ctxError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return connect.NewError(connect.CodeDeadlineExceeded, ctx.Err())
	}
	return connect.NewError(connect.CodeCanceled, ctx.Err())
}

// logCall records one call; mutations at Info so a demo shows what PM did,
// reads at Debug because PM polls them.
func (s *Sim) logCall(ctx context.Context, procedure, corr string, start time.Time, err error) {
	level := slog.LevelDebug
	if isMutation(procedure) {
		level = slog.LevelInfo
	}
	code := "ok"
	if err != nil {
		code = connect.CodeOf(err).String()
		level = max(level, slog.LevelInfo)
	}
	if !s.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("procedure", procedure),
		slog.String("code", code),
		slog.Duration("elapsed", time.Since(start)),
	}
	if corr != "" {
		attrs = append(attrs, slog.String("correlation_id", corr))
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	s.log.LogAttrs(ctx, level, "crm call", attrs...)
}
