package config_test

import (
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/oaas/pm/internal/config"
)

func load(env map[string]string) (config.Config, error) {
	return config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, err := load(nil)
	if err != nil {
		t.Fatal(err)
	}
	// Without authentication the default listener is loopback only (issue 10).
	if c.Server.Addr() != "127.0.0.1:8080" || c.Storage.Type != "memory" || c.Log.Format != "json" {
		t.Errorf("defaults %+v", c)
	}
	if !c.CRM.EmbeddedSimulator || len(c.CRM.Clusters) != 0 {
		t.Errorf("no CRM configured must mean the embedded simulator: %+v", c.CRM)
	}
	if c.CRM.Timeout != 30*time.Second || c.CRM.HealthCacheTTL != 15*time.Second || c.Deploy.MaxRetries != 2 ||
		c.Deploy.ReplicaCap != 50 || c.Deploy.DefaultAvailability != 0.99 || c.PackageDelete.Cascade || c.Deploy.RollbackOnPartial {
		t.Errorf("reference-design defaults not kept: %+v", c)
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	c, err := load(map[string]string{
		"SERVER_HOST": "127.0.0.1", "SERVER_PORT": "9000",
		"STORAGE_TYPE": "postgres", "DATABASE_URL": "postgres://x@y/z",
		"RUST_LOG": "debug", "LOG_FORMAT": "text",
		"CRM_DEFAULT_URL":     "http://crm:8088",
		"CRM_CLUSTERS":        "east=https://east:443, west=http://10.0.0.2:8088",
		"CRM_EAST_TLS_CA":     "/ca.pem",
		"CRM_DEFAULT_TIMEOUT": "5", "CRM_HEALTH_CACHE_TTL": "1m30s",
		"DEPLOY_ROLLBACK_ON_PARTIAL": "true", "DEPLOY_REPLICA_ALGORITHM": "independent",
		"PACKAGE_DELETE_CASCADE": "true",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.Addr() != "127.0.0.1:9000" || c.Storage.Type != "postgres" || c.Log.Level != slog.LevelDebug || c.Log.Format != "text" {
		t.Errorf("server/storage/log %+v", c)
	}
	if len(c.CRM.Clusters) != 3 || c.CRM.EmbeddedSimulator {
		t.Fatalf("clusters %+v", c.CRM.Clusters)
	}
	byName := map[string]config.Cluster{}
	for _, cl := range c.CRM.Clusters {
		byName[cl.Name] = cl
	}
	if byName["default"].URL != "http://crm:8088" || byName["east"].TLS.CAFile != "/ca.pem" || byName["west"].URL != "http://10.0.0.2:8088" {
		t.Errorf("clusters %+v", byName)
	}
	if c.CRM.Timeout != 5*time.Second || c.CRM.HealthCacheTTL != 90*time.Second {
		t.Errorf("durations %v %v", c.CRM.Timeout, c.CRM.HealthCacheTTL)
	}
	if !c.Deploy.RollbackOnPartial || c.Deploy.ReplicaAlgorithm != "independent" || !c.PackageDelete.Cascade {
		t.Errorf("policy %+v %+v", c.Deploy, c.PackageDelete)
	}
}

func TestLoadErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	cases := []struct {
		env  map[string]string
		want []string
	}{
		{map[string]string{"SERVER_PORT": "http"}, []string{"SERVER_PORT"}},
		{map[string]string{"SERVER_PORT": "70000"}, []string{"SERVER_PORT"}},
		{map[string]string{"STORAGE_TYPE": "etcd"}, []string{"STORAGE_TYPE"}},
		{map[string]string{"STORAGE_TYPE": "postgres"}, []string{"DATABASE_URL"}},
		{map[string]string{"LOG_FORMAT": "xml", "LOG_LEVEL": "loud"}, []string{"LOG_FORMAT", "LOG_LEVEL"}},
		{map[string]string{"CRM_DEFAULT_URL": "grpc://crm:1"}, []string{"CRM_DEFAULT_URL"}},
		{map[string]string{"CRM_CLUSTERS": "east"}, []string{"CRM_CLUSTERS"}},
		{map[string]string{"CRM_CLUSTERS": "east=http://a:1,east=http://b:2"}, []string{"CRM_CLUSTERS", "twice"}},
		{map[string]string{"CRM_CLUSTERS": "Bad_Name=http://a:1"}, []string{"CRM_CLUSTERS"}},
		{map[string]string{"CRM_CLUSTERS": "east=http://a:1", "CRM_EAST_TLS_CERT": "/c.pem"}, []string{"CRM_EAST_TLS_CERT"}},
		{map[string]string{"CRM_DEFAULT_TIMEOUT": "soon"}, []string{"CRM_DEFAULT_TIMEOUT"}},
		{map[string]string{"DEPLOY_REPLICA_ALGORITHM": "magic"}, []string{"DEPLOY_REPLICA_ALGORITHM"}},
		{map[string]string{"DEPLOY_DEFAULT_AVAILABILITY": "1.5"}, []string{"DEPLOY_DEFAULT_AVAILABILITY"}},
		{map[string]string{"DEPLOY_ROLLBACK_ON_PARTIAL": "maybe"}, []string{"DEPLOY_ROLLBACK_ON_PARTIAL"}},
		{map[string]string{"DEPLOY_REPLICA_CAP": "0", "METRICS_PORT": "-1"}, []string{"DEPLOY_REPLICA_CAP", "METRICS_PORT"}},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.want, "+"), func(t *testing.T) {
			t.Parallel()
			_, err := load(tc.env)
			if err == nil {
				t.Fatalf("%v accepted", tc.env)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
		})
	}
}

func TestClusterGenerationPin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		want    map[string]int
		wantErr string
	}{
		{"detected by default", map[string]string{"CRM_CLUSTERS": "east=http://e:1,west=http://w:1"},
			map[string]int{"east": 0, "west": 0}, ""},
		{"pinned per cluster", map[string]string{
			"CRM_DEFAULT_URL": "http://d:1", "CRM_CLUSTERS": "east=http://e:1,us-west=http://w:1",
			"CRM_DEFAULT_GENERATION": "1", "CRM_EAST_GENERATION": "auto", "CRM_US_WEST_GENERATION": "2",
		}, map[string]int{"default": 1, "east": 0, "us-west": 2}, ""},
		{"a pin for an unknown cluster is not read", map[string]string{"CRM_CLUSTERS": "east=http://e:1", "CRM_WEST_GENERATION": "7"},
			map[string]int{"east": 0}, ""},
		{"bad value names the variable", map[string]string{"CRM_CLUSTERS": "east=http://e:1", "CRM_EAST_GENERATION": "3"},
			nil, `CRM_EAST_GENERATION: "3" is not 1, 2 or auto`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := load(tt.env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]int{}
			for _, cl := range c.CRM.Clusters {
				got[cl.Name] = cl.Generation
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("generations = %v, want %v", got, tt.want)
			}
		})
	}
}
