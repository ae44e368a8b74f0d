package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRunFollowsTheStatus(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			w.WriteHeader(http.StatusOK)
			return
		}
		http.Error(w, `{"status":"not ready"}`, http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	t.Cleanup(tlsSrv.Close)

	for _, tc := range []struct {
		name, url string
		wantErr   string
	}{
		{name: "ready", url: srv.URL + "/readyz"},
		{name: "not ready", url: srv.URL + "/other", wantErr: "503"},
		{name: "self-signed TLS", url: tlsSrv.URL + "/readyz"},
		{name: "nothing listening", url: "http://127.0.0.1:1/readyz", wantErr: "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := run([]string{"-url", tc.url}, func(string) string { return "" })
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("run: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("run: %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestLocalURLReadsPMsVariables(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{name: "defaults", want: "http://127.0.0.1:8080/readyz"},
		{name: "wildcard host", env: map[string]string{"SERVER_HOST": "0.0.0.0", "SERVER_PORT": "9000"}, want: "http://127.0.0.1:9000/readyz"},
		{name: "IPv6 wildcard", env: map[string]string{"SERVER_HOST": "::"}, want: "http://127.0.0.1:8080/readyz"},
		{name: "one address", env: map[string]string{"SERVER_HOST": "10.0.0.7"}, want: "http://10.0.0.7:8080/readyz"},
		{name: "TLS", env: map[string]string{"SERVER_TLS_CERT_FILE": "/etc/pm/tls/tls.crt"}, want: "https://127.0.0.1:8080/readyz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := localURL(func(k string) string { return tc.env[k] }, "/readyz"); got != tc.want {
				t.Errorf("localURL = %q, want %q", got, tc.want)
			}
		})
	}
}
