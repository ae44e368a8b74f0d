package app_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/crmsim"
	"github.com/oaas/pm/internal/crmsim/crmsimtest"
)

// withClusters points PM at the given simulators (and nothing embedded).
func withClusters(sims ...*crmsim.Sim) func(*config.Config) {
	return func(c *config.Config) {
		c.CRM.EmbeddedSimulator = false
		c.CRM.Clusters = nil
		for _, s := range sims {
			c.CRM.Clusters = append(c.CRM.Clusters, config.Cluster{Name: s.EnvName(), URL: s.URL()})
		}
		c.CRM.Timeout = 2 * time.Second
	}
}

// clusterHealthFields are the ClusterHealth fields of rest-json-model.md,
// plus message, which says why a cluster is not healthy.
var clusterHealthFields = []string{
	"cluster_name", "status", "crm_version", "last_seen", "node_count", "ready_nodes", "availability", "message",
}

// checkClusterHealthJSON checks one ClusterHealth object's REST shape.
func checkClusterHealthJSON(t *testing.T, h map[string]any) {
	t.Helper()
	for k := range h {
		if !slices.Contains(clusterHealthFields, k) {
			t.Errorf("ClusterHealth has unexpected field %q: %v", k, h)
		}
	}
	if ls, ok := h["last_seen"].(string); ok {
		if _, err := time.Parse(time.RFC3339Nano, ls); err != nil || !strings.HasSuffix(ls, "Z") {
			t.Errorf("last_seen %q is not RFC 3339 UTC", ls)
		}
	}
}

func TestRESTClusters(t *testing.T) {
	t.Parallel()
	east := crmsimtest.Start(t, crmsim.Config{EnvName: "east", Availability: new(0.95), NodeCount: 4})
	west := crmsimtest.Start(t, crmsim.Config{EnvName: "west", NotServing: true})
	e := setup(t, "memory", withClusters(east, west))

	var list []map[string]any
	got := e.do("GET", "/api/v1/clusters", nil).expect(t, http.StatusOK)
	got.json(t, &list)
	if len(list) != 2 || list[0]["name"] != "east" || list[1]["name"] != "west" {
		t.Fatalf("GET /clusters = %s", got.body)
	}
	for _, info := range list {
		if len(info) != 2 {
			t.Errorf("ClusterInfo has fields other than name and health: %v", info)
		}
	}
	eh := list[0]["health"].(map[string]any)
	checkClusterHealthJSON(t, eh)
	if eh["cluster_name"] != "east" || eh["status"] != "Healthy" || eh["availability"] != 0.95 ||
		eh["node_count"] != 4.0 || eh["ready_nodes"] != 4.0 || eh["crm_version"] != crmsim.DefaultCRMVersion || eh["last_seen"] == nil {
		t.Errorf("east health = %v", eh)
	}
	if _, ok := eh["message"]; ok {
		t.Errorf("healthy cluster carries a message: %v", eh)
	}
	wh := list[1]["health"].(map[string]any)
	checkClusterHealthJSON(t, wh)
	if wh["status"] != "Unhealthy" {
		t.Errorf("west health = %v", wh)
	}
	for _, camel := range []string{"clusterName", "lastSeen", "nodeCount", "crmVersion"} {
		if bytes.Contains(got.body, []byte(camel)) {
			t.Errorf("REST JSON has camelCase %q: %s", camel, got.body)
		}
	}

	var hs []map[string]any
	got = e.do("GET", "/api/v1/clusters/health", nil).expect(t, http.StatusOK)
	got.json(t, &hs)
	if len(hs) != 2 || hs[0]["cluster_name"] != "east" || hs[0]["availability"] != 0.95 || hs[1]["cluster_name"] != "west" {
		t.Fatalf("GET /clusters/health = %s", got.body)
	}
	for _, h := range hs {
		checkClusterHealthJSON(t, h)
	}

	var one map[string]any
	got = e.do("GET", "/api/v1/clusters/east/health", nil).expect(t, http.StatusOK)
	got.json(t, &one)
	checkClusterHealthJSON(t, one)
	if one["cluster_name"] != "east" || one["availability"] != 0.95 || one["status"] != "Healthy" {
		t.Fatalf("GET /clusters/east/health = %s", got.body)
	}

	missing := e.do("GET", "/api/v1/clusters/nope/health", nil).expect(t, http.StatusNotFound)
	if msg := missing.errorText(t); !strings.Contains(msg, `"nope"`) {
		t.Fatalf("404 message %q does not name the cluster", msg)
	}
}

func TestRESTClusterUnreachable(t *testing.T) {
	t.Parallel()
	hung := crmsimtest.Start(t, crmsim.Config{EnvName: "hung", Hang: true})
	ok := crmsimtest.Start(t, crmsim.Config{EnvName: "ok", Availability: new(0.9)})
	e := setup(t, "memory", withClusters(hung, ok), func(c *config.Config) {
		c.CRM.Timeout = 200 * time.Millisecond
	})
	start := time.Now()
	var hs []map[string]any
	e.do("GET", "/api/v1/clusters/health", nil).expect(t, http.StatusOK).json(t, &hs)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("a hung CRM held /clusters/health for %v", d)
	}
	if len(hs) != 2 || hs[0]["cluster_name"] != "ok" || hs[0]["availability"] != 0.9 ||
		hs[1]["status"] != "Unhealthy" || !strings.Contains(hs[1]["message"].(string), "did not answer in time") {
		t.Fatalf("health = %v", hs)
	}
}

func TestRESTEmbeddedDefaultCluster(t *testing.T) {
	t.Parallel()
	e := setup(t, "memory", func(c *config.Config) {
		c.CRM.Clusters = nil
		c.CRM.EmbeddedSimulator = true
	})
	var list []map[string]any
	got := e.do("GET", "/api/v1/clusters", nil).expect(t, http.StatusOK)
	got.json(t, &list)
	if len(list) != 1 || list[0]["name"] != "default" {
		t.Fatalf("GET /clusters with no CRM configured = %s", got.body)
	}
	if h := list[0]["health"].(map[string]any); h["status"] != "Healthy" || h["node_count"] == nil {
		t.Fatalf("embedded cluster health = %v", h)
	}
	e.do("GET", "/api/v1/clusters/default/health", nil).expect(t, http.StatusOK)
}

func TestConnectClusters(t *testing.T) {
	t.Parallel()
	east := crmsimtest.Start(t, crmsim.Config{EnvName: "east", Availability: new(0.95)})
	west := crmsimtest.Start(t, crmsim.Config{EnvName: "west", NodeCount: 3, ReadyNodes: new(uint32(1))})
	e := setup(t, "memory", withClusters(west, east))
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			c := pmv1connect.NewClusterServiceClient(e.h2c, e.base, p.opts...)
			ctx := context.Background()
			list, err := c.ListClusters(ctx, &pmv1.ListClustersRequest{})
			if err != nil {
				t.Fatal(err)
			}
			items := list.GetItems()
			if len(items) != 2 || items[0].GetName() != "east" || items[0].GetHealth().GetAvailability() != 0.95 ||
				items[1].GetName() != "west" || items[1].GetHealth().GetStatus() != "Degraded" || items[1].GetHealth().GetReadyNodes() != 1 {
				t.Fatalf("ListClusters = %v", list)
			}
			hs, err := c.ListClustersHealth(ctx, &pmv1.ListClustersHealthRequest{})
			if err != nil || len(hs.GetItems()) != 2 || hs.GetItems()[0].GetClusterName() != "east" {
				t.Fatalf("ListClustersHealth = %v, %v", hs, err)
			}
			one, err := c.GetClusterHealth(ctx, &pmv1.GetClusterHealthRequest{Name: "west"})
			if err != nil || one.GetHealth().GetStatus() != "Degraded" || one.GetHealth().GetLastSeen() == nil {
				t.Fatalf("GetClusterHealth = %v, %v", one, err)
			}
			_, err = c.GetClusterHealth(ctx, &pmv1.GetClusterHealthRequest{Name: "nope"})
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != connect.CodeNotFound {
				t.Fatalf("GetClusterHealth(unknown) = %v", err)
			}
		})
	}
}
