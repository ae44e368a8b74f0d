package server_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/internal/server"
)

// slowPackages answers GetPackage only when its context ends.
type slowPackages struct {
	pmv1connect.UnimplementedPackageServiceHandler
}

func (slowPackages) GetPackage(ctx context.Context, _ *pmv1.GetPackageRequest) (*pmv1.GetPackageResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func setup(t *testing.T, limits server.Limits) *httptest.Server {
	t.Helper()
	path, h := pmv1connect.NewPackageServiceHandler(slowPackages{})
	handler, err := server.Handler(server.Config{
		Services: []server.Service{{Name: pmv1connect.PackageServiceName, Path: path, Handler: h}},
		Limits:   limits,
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(handler)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestRequestTimeoutEveryProtocol(t *testing.T) {
	t.Parallel()
	srv := setup(t, server.Limits{RequestTimeout: 200 * time.Millisecond})
	start := time.Now()
	res, err := srv.Client().Get(srv.URL + "/api/v1/packages/p")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body map[string]string
	_ = json.NewDecoder(res.Body).Decode(&body)
	if res.StatusCode != http.StatusGatewayTimeout || body["error"] == "" {
		t.Errorf("REST: %d %v, want 504 with an error", res.StatusCode, body)
	}
	for _, opt := range []connect.ClientOption{connect.WithGRPC(), connect.WithGRPCWeb(), connect.WithProtoJSON()} {
		client := pmv1connect.NewPackageServiceClient(srv.Client(), srv.URL, opt)
		if _, err := client.GetPackage(context.Background(), &pmv1.GetPackageRequest{Name: "p"}); connect.CodeOf(err) != connect.CodeDeadlineExceeded {
			t.Errorf("err = %v, want deadline_exceeded", err)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("four calls with a 200ms deadline took %s", d)
	}
}

func TestGuardAnswersInTheCallersProtocol(t *testing.T) {
	t.Parallel()
	srv := setup(t, server.Limits{})
	long := strings.Repeat("a", 9000)
	for _, c := range []struct {
		path   string
		status int
		want   string
	}{
		{"/api/v1/packages?name_pattern=" + long, http.StatusRequestURITooLong, `"error"`},
		{"/api/v1/packages?name_pattern=%FF", http.StatusBadRequest, "UTF-8"},
		{"/oaas.pm.v1.PackageService/GetPackage?encoding=json&message=%FF", http.StatusBadRequest, `"code":"invalid_argument"`},
	} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+c.path, nil)
		if strings.HasPrefix(c.path, "/oaas") {
			req.Header.Set("Connect-Protocol-Version", "1")
		}
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != c.status || !strings.Contains(string(raw), c.want) {
			t.Errorf("GET %.60s: %d %s, want %d with %s", c.path, res.StatusCode, raw, c.status, c.want)
		}
	}
}
