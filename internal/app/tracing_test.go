package app_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oaas/pm/internal/logtest"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/oaas/pm/internal/app"
	"github.com/oaas/pm/internal/config"
)

// otlpReceiver is an OTLP/HTTP trace endpoint on loopback that keeps what
// it receives.
type otlpReceiver struct {
	mu    sync.Mutex
	spans map[string][]string // trace id → span names
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(raw, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				id := hex.EncodeToString(s.GetTraceId())
				o.spans[id] = append(o.spans[id], s.GetName())
			}
		}
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

func (o *otlpReceiver) names(trace string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.spans[trace]...)
}

// Not parallel: the OTLP exporter reads OTEL_EXPORTER_OTLP_* from the
// process environment, as in production.
func TestTracingExportsSpansAndLogsCarryTraceIDs(t *testing.T) {
	recv := &otlpReceiver{spans: map[string][]string{}}
	collector := httptest.NewServer(recv)
	t.Cleanup(collector.Close)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")

	cfg, err := config.Load(func(k string) (string, bool) {
		if k == "OTEL_EXPORTER_OTLP_ENDPOINT" {
			return collector.URL, true
		}
		return "", false
	})
	if err != nil || !cfg.Tracing.Enabled || cfg.Tracing.Protocol != "http/protobuf" {
		t.Fatalf("config: %v %+v", err, cfg.Tracing)
	}
	logs := &logtest.Buffer{}
	cfg.Server.Host, cfg.Server.Port, cfg.Metrics.Port = "127.0.0.1", 0, 0
	cfg.CRM.EmbeddedSimulator = true
	log := app.NewLogger(config.Log{Level: slog.LevelDebug, Format: "json"}, logs)
	a, err := app.New(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest(http.MethodPost, "http://"+a.Addr()+"/api/v1/packages", bytes.NewReader([]byte(`{"name":"traced","bogus":1}`)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Field-Validation", "Strict")
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	// A deployment: its CRM calls are client spans of the caller's trace.
	for _, body := range []struct{ path, doc string }{
		{"/api/v1/packages", `{"name":"traced-pkg","functions":[{"key":"f","provision_config":{"container_image":"img"}}],"classes":[{"key":"C","function_bindings":[{"name":"f","function_key":"f"}]}]}`},
		{"/api/v1/deployments", `{"key":"traced","package_name":"traced-pkg","class_key":"C","target_envs":["default"]}`},
	} {
		req, _ = http.NewRequest(http.MethodPost, "http://"+a.Addr()+body.path, bytes.NewReader([]byte(body.doc)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
		if res, err = http.DefaultClient.Do(req); err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("POST %s: %d %s", body.path, res.StatusCode, raw)
		}
	}
	// A refused call goes through the connect handler too only when it
	// passes the REST checks; make one that does.
	req, _ = http.NewRequest(http.MethodGet, "http://"+a.Addr()+"/api/v1/packages/nope", nil)
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	if res, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(recv.names(traceID)) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	names := recv.names(traceID)
	for _, want := range []string{"oaas.pm.v1.PackageService/GetPackage", "oaas.pm.v1.DeploymentService/CreateDeployment",
		"pm.operation deploy", "pm.step default", "oaas.deployment.DeploymentService/Deploy"} {
		if !strings.Contains(strings.Join(names, ","), want) {
			t.Errorf("the caller's trace has no %s span: %q", want, names)
		}
	}
	// The failed call's log line carries the trace.
	found := false
	for _, line := range strings.Split(logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "request failed" && rec["trace_id"] == traceID {
			found = true
		}
		if strings.Contains(line, `"interval":`) && !strings.Contains(line, `"interval":"`) {
			t.Errorf("a duration is logged as a number: %s", line)
		}
	}
	if !found {
		t.Errorf("no 'request failed' log line with trace_id %s:\n%s", traceID, logs)
	}
}
