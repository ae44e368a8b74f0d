package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	healthpb "github.com/oaas/pm/gen/go/oaas/health"
	"github.com/oaas/pm/gen/go/oaas/health/healthconnect"
	topologypb "github.com/oaas/pm/gen/go/oaas/topology"
	"github.com/oaas/pm/gen/go/oaas/topology/topologyconnect"
	"github.com/oaas/pm/internal/crmsim"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, cfgs []crmsim.Config)
	}{
		{
			name: "defaults",
			check: func(t *testing.T, cfgs []crmsim.Config) {
				c := cfgs[0]
				if len(cfgs) != 1 || c.Addr != "127.0.0.1:8088" || c.EnvName != "default" {
					t.Errorf("got %d configs, first %s %s", len(cfgs), c.EnvName, c.Addr)
				}
				if c.ReadyNodes != nil || c.Availability != nil || c.TLS != nil {
					t.Error("optional knobs are set by default")
				}
				if c.FailDeployCode != connect.CodeUnavailable {
					t.Errorf("fail code = %v", c.FailDeployCode)
				}
			},
		},
		{
			name: "every knob by flag",
			args: []string{
				"--listen", "127.0.0.1:9000", "--env", "lab", "--nodes", "5", "--ready-nodes", "4",
				"--availability", "0.99", "--latency", "50ms", "--fail-first-deploys", "2",
				"--fail-deploy-code", "INTERNAL", "--fail-deploy-in-body", "--fail-deploy-after-apply",
				"--fail-rate", "0.25", "--seed", "9", "--hang", "--not-serving", "--disable-crm-info",
				"--disable-oaas-health", "--strict-env", "--progress-delay", "1s", "--ready-delay", "2s",
				"--namespace", "ns", "--crm-version", "v9", "--generation", "2", "--omit-crm-version",
			},
			check: func(t *testing.T, cfgs []crmsim.Config) {
				c := cfgs[0]
				ok := c.Addr == "127.0.0.1:9000" && c.EnvName == "lab" && c.NodeCount == 5 &&
					*c.ReadyNodes == 4 && *c.Availability == 0.99 && c.Latency == 50*time.Millisecond &&
					c.FailFirstDeploys == 2 && c.FailDeployCode == connect.CodeInternal && c.FailDeployInBody &&
					c.FailDeployAfterApply && c.FailRate == 0.25 && c.Seed == 9 && c.Hang && c.NotServing &&
					c.DisableCrmInfo && c.DisableOaasHealth && c.StrictEnv && c.ProgressDelay == time.Second &&
					c.ReadyDelay == 2*time.Second && c.Namespace == "ns" && c.CRMVersion == "v9" &&
					c.Generation == 2 && c.OmitCRMVersion
				if !ok {
					t.Errorf("config = %+v", c)
				}
			},
		},
		{
			name: "environment fills what flags leave out",
			args: []string{"--env", "from-flag"},
			env: map[string]string{
				"CRMSIM_ENV": "from-env", "CRMSIM_LISTEN": "127.0.0.1:9100", "CRMSIM_AVAILABILITY": "0.5",
				"CRMSIM_HANG": "true", "CRMSIM_PROGRESS_DELAY": "10ms",
			},
			check: func(t *testing.T, cfgs []crmsim.Config) {
				c := cfgs[0]
				if c.EnvName != "from-flag" || c.Addr != "127.0.0.1:9100" || *c.Availability != 0.5 || !c.Hang ||
					c.ProgressDelay != 10*time.Millisecond {
					t.Errorf("config = %+v", c)
				}
			},
		},
		{
			name: "several clusters share the knobs, seeds differ",
			args: []string{"--cluster", "east=127.0.0.1:8091", "--cluster", "west=127.0.0.1:8092", "--nodes", "7", "--seed", "3"},
			check: func(t *testing.T, cfgs []crmsim.Config) {
				if len(cfgs) != 2 || cfgs[0].EnvName != "east" || cfgs[1].Addr != "127.0.0.1:8092" {
					t.Fatalf("configs = %+v", cfgs)
				}
				if cfgs[0].NodeCount != 7 || cfgs[1].NodeCount != 7 || cfgs[0].Seed != 3 || cfgs[1].Seed != 4 {
					t.Errorf("shared knobs: %+v", cfgs)
				}
			},
		},
		{
			name: "a generation per cluster, the rest from --generation",
			args: []string{"--cluster", "old=127.0.0.1:8091@1,new=127.0.0.1:8092@2", "--cluster", "dflt=127.0.0.1:8093", "--generation", "2"},
			check: func(t *testing.T, cfgs []crmsim.Config) {
				if len(cfgs) != 3 || cfgs[0].Generation != 1 || cfgs[1].Generation != 2 || cfgs[2].Generation != 2 ||
					cfgs[1].Addr != "127.0.0.1:8092" {
					t.Errorf("configs = %+v", cfgs)
				}
			},
		},
		{
			name: "clusters from the environment",
			env:  map[string]string{"CRMSIM_CLUSTER": "a=127.0.0.1:1, b=127.0.0.1:2"},
			check: func(t *testing.T, cfgs []crmsim.Config) {
				if len(cfgs) != 2 || cfgs[1].EnvName != "b" {
					t.Errorf("configs = %+v", cfgs)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o, err := parseOptions(tt.args, envOf(tt.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			cfgs, err := o.configs(nil)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, cfgs)
		})
	}
}

func TestParseOptionsRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"cluster without address", []string{"--cluster", "east"}, nil},
		{"cluster without port", []string{"--cluster", "east=localhost"}, nil},
		{"duplicate cluster", []string{"--cluster", "e=127.0.0.1:1", "--cluster", "e=127.0.0.1:2"}, nil},
		{"bad availability", []string{"--availability", "high"}, nil},
		{"bad ready nodes", []string{"--ready-nodes", "-1"}, nil},
		{"bad code", []string{"--fail-deploy-code", "nope"}, nil},
		{"ok is not a failure", []string{"--fail-deploy-code", "code_0"}, nil},
		{"key without cert", []string{"--tls-key", "k.pem"}, nil},
		{"client CA without TLS", []string{"--client-ca", "ca.pem"}, nil},
		{"missing cert file", []string{"--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"}, nil},
		{"bad env value", nil, map[string]string{"CRMSIM_LATENCY": "soon"}},
		{"stray argument", []string{"extra"}, nil},
		{"bad generation", []string{"--generation", "3"}, nil},
		{"bad cluster generation", []string{"--cluster", "e=127.0.0.1:1@0"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o, err := parseOptions(tt.args, envOf(tt.env), io.Discard)
			if err == nil {
				_, err = o.configs(nil)
			}
			if err == nil {
				t.Error("accepted")
			}
		})
	}
}

// lockedBuffer collects logs written by the server goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) urls() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(l.b.Bytes()))
	for sc.Scan() {
		var rec struct{ Msg, Env, URL string }
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "simulated CRM ready" {
			out[rec.Env] = rec.URL
		}
	}
	return out
}

func TestRunServesClustersUntilCanceled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	logs := &lockedBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--cluster", "east=127.0.0.1:0", "--cluster", "west=127.0.0.1:0@2", "--ready-nodes", "1"},
			envOf(nil), logs)
	}()

	deadline := time.Now().Add(5 * time.Second)
	for len(logs.urls()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("simulators did not come up; logs:\n%s", logs.b.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	defer tr.CloseIdleConnections()
	// east plays the first generation, west the second.
	wantVersion := map[string]string{"east": crmsim.DefaultCRMVersion, "west": crmsim.Generation2CRMVersion}
	wantTopology := map[string]connect.Code{"east": connect.CodeUnimplemented, "west": 0}
	for env, url := range logs.urls() {
		client := healthconnect.NewCrmInfoServiceClient(&http.Client{Transport: tr}, url, connect.WithGRPC())
		res, err := client.GetEnvHealth(ctx, &healthpb.CrmEnvRequest{})
		if err != nil || res.GetEnvName() != env || res.GetStatus() != "Degraded" || res.GetCrmVersion() != wantVersion[env] {
			t.Errorf("%s at %s: %v, %v", env, url, res, err)
		}
		topo := topologyconnect.NewTopologyServiceClient(&http.Client{Transport: tr}, url, connect.WithGRPC())
		_, err = topo.GetTopology(ctx, &topologypb.TopologyRequest{})
		if code := connect.CodeOf(err); err != nil && code != wantTopology[env] || err == nil && wantTopology[env] != 0 {
			t.Errorf("%s: GetTopology = %v, want code %v", env, err, wantTopology[env])
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

func TestRunHelp(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := run(t.Context(), []string{"--help"}, envOf(nil), &out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out.Bytes(), []byte("-fail-first-deploys")) {
		t.Errorf("help does not list the flags:\n%s", out.String())
	}
}
