package api_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/internal/api"
	"github.com/oaas/pm/internal/server"
	"github.com/oaas/pm/internal/store"
	"github.com/oaas/pm/internal/store/memory"
	"github.com/oaas/pm/internal/store/storetest"
)

// auditEnv is an AuditService over a memory trail of n records, served
// with PM's server (REST through the transcoder) on loopback.
type auditEnv struct {
	url    string
	client *http.Client
	rpc    pmv1connect.AuditServiceClient
	// recs are the stored records, newest first.
	recs []store.AuditRecord
}

var (
	principals = []string{"ci", "bot", "ada"}
	actions    = []string{"oaas.pm.v1.PackageService/CreatePackage", "oaas.pm.v1.DeploymentService/DeleteDeployment"}
	outcomes   = []store.AuditOutcome{store.AuditOK, store.AuditDenied, store.AuditError}
)

func setupAudit(t *testing.T, n int) *auditEnv {
	t.Helper()
	st := memory.New(storetest.NewClock())
	t.Cleanup(st.Close)
	e := &auditEnv{}
	for i := range n {
		rec, err := st.AppendAudit(context.Background(), store.AuditRecord{
			Principal: principals[i%len(principals)], Role: "editor", AuthMethod: "token",
			Action: actions[i%len(actions)], Target: fmt.Sprintf("t%d", i%5), Outcome: outcomes[i%len(outcomes)],
			Code: "ok", CorrelationID: fmt.Sprint("c", i), Source: "10.0.0.1", IdempotencyKey: fmt.Sprint("k", i),
		})
		if err != nil {
			t.Fatal(err)
		}
		e.recs = append([]store.AuditRecord{rec}, e.recs...)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	path, handler := pmv1connect.NewAuditServiceHandler(api.NewAudit(st), connect.WithInterceptors(api.Interceptor(log)))
	h, err := server.Handler(server.Config{
		Services: []server.Service{{Name: pmv1connect.AuditServiceName, Path: path, Handler: handler}},
		Aliases:  api.FieldAliases, Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &protocols, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	e.url = "http://" + ln.Addr().String()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	e.client = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	e.rpc = pmv1connect.NewAuditServiceClient(e.client, e.url)
	return e
}

// where returns the ids of the records matching keep, newest first.
func (e *auditEnv) where(keep func(store.AuditRecord) bool) []string {
	var ids []string
	for _, r := range e.recs {
		if keep(r) {
			ids = append(ids, strconv.FormatInt(r.ID, 10))
		}
	}
	return ids
}

func ids(items []*pmv1.AuditRecord) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.GetId()
	}
	return out
}

func TestListAuditFilters(t *testing.T) {
	t.Parallel()
	e := setupAudit(t, 30)
	rfc := func(tm time.Time) string { return tm.Format(time.RFC3339Nano) }
	mid, late := e.recs[20].Time, e.recs[5].Time
	tests := []struct {
		name string
		req  *pmv1.ListAuditRecordsRequest
		keep func(store.AuditRecord) bool
	}{
		{"all", &pmv1.ListAuditRecordsRequest{}, func(store.AuditRecord) bool { return true }},
		{"principal", &pmv1.ListAuditRecordsRequest{Principal: "bot"}, func(r store.AuditRecord) bool { return r.Principal == "bot" }},
		{"action", &pmv1.ListAuditRecordsRequest{Action: actions[1]}, func(r store.AuditRecord) bool { return r.Action == actions[1] }},
		{"action with a slash", &pmv1.ListAuditRecordsRequest{Action: "/" + actions[0]}, func(r store.AuditRecord) bool { return r.Action == actions[0] }},
		{"target", &pmv1.ListAuditRecordsRequest{Target: "t3"}, func(r store.AuditRecord) bool { return r.Target == "t3" }},
		{"outcome", &pmv1.ListAuditRecordsRequest{Outcome: "denied"}, func(r store.AuditRecord) bool { return r.Outcome == store.AuditDenied }},
		{"since", &pmv1.ListAuditRecordsRequest{Since: rfc(mid)}, func(r store.AuditRecord) bool { return !r.Time.Before(mid) }},
		{"window", &pmv1.ListAuditRecordsRequest{Since: rfc(mid), Until: rfc(late)},
			func(r store.AuditRecord) bool { return !r.Time.Before(mid) && r.Time.Before(late) }},
		{"since in another zone", &pmv1.ListAuditRecordsRequest{Since: mid.In(time.FixedZone("X", -5*3600)).Format(time.RFC3339Nano)},
			func(r store.AuditRecord) bool { return !r.Time.Before(mid) }},
		{"combined", &pmv1.ListAuditRecordsRequest{Principal: "ci", Outcome: "ok"},
			func(r store.AuditRecord) bool { return r.Principal == "ci" && r.Outcome == store.AuditOK }},
		{"nothing", &pmv1.ListAuditRecordsRequest{Principal: "nobody"}, func(store.AuditRecord) bool { return false }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res, err := e.rpc.ListAuditRecords(t.Context(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			want := e.where(tc.keep)
			if len(want) == 0 && tc.name != "nothing" {
				t.Fatal("the case selects nothing, so it tests nothing")
			}
			if got := ids(res.GetItems()); !slices.Equal(got, want) {
				t.Errorf("ids %v, want %v", got, want)
			}
			if res.GetNextPageToken() != "" {
				t.Errorf("next page token %q on the only page", res.GetNextPageToken())
			}
		})
	}
	// Every field reaches the client.
	res, err := e.rpc.ListAuditRecords(t.Context(), &pmv1.ListAuditRecordsRequest{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	r, got := e.recs[0], res.GetItems()[0]
	if got.GetId() != strconv.FormatInt(r.ID, 10) || !got.GetTime().AsTime().Equal(r.Time) || got.GetPrincipal() != r.Principal ||
		got.GetRole() != r.Role || got.GetAuthMethod() != r.AuthMethod || got.GetAction() != r.Action || got.GetTarget() != r.Target ||
		got.GetOutcome() != string(r.Outcome) || got.GetStatusCode() != r.Code || got.GetCorrelationId() != r.CorrelationID ||
		got.GetSource() != r.Source || got.GetIdempotencyKey() != r.IdempotencyKey {
		t.Errorf("record %v, stored %+v", got, r)
	}
}

func TestListAuditPaging(t *testing.T) {
	t.Parallel()
	e := setupAudit(t, 23)
	for _, tc := range []struct {
		name    string
		limit   int32
		outcome string
	}{{"all by 7", 7, ""}, {"all by 1", 1, ""}, {"denied by 2", 2, "denied"}, {"exact", 23, ""}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got []string
			token := ""
			for pages := 0; ; pages++ {
				if pages > 30 {
					t.Fatal("paging does not end")
				}
				res, err := e.rpc.ListAuditRecords(t.Context(), &pmv1.ListAuditRecordsRequest{Limit: tc.limit, Outcome: tc.outcome, PageToken: token})
				if err != nil {
					t.Fatal(err)
				}
				if len(res.GetItems()) > int(tc.limit) {
					t.Fatalf("page of %d, limit %d", len(res.GetItems()), tc.limit)
				}
				got = append(got, ids(res.GetItems())...)
				if token = res.GetNextPageToken(); token == "" {
					break
				}
			}
			want := e.where(func(r store.AuditRecord) bool { return tc.outcome == "" || string(r.Outcome) == tc.outcome })
			if !slices.Equal(got, want) {
				t.Errorf("pages %v, want %v", got, want)
			}
		})
	}
}

// rest is one REST response.
type rest struct {
	status int
	header http.Header
	body   string
}

func (e *auditEnv) get(t *testing.T, query url.Values) rest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/api/v1/audit?"+query.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return rest{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

func TestListAuditREST(t *testing.T) {
	t.Parallel()
	e := setupAudit(t, 12)
	var got []string
	token := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		q := url.Values{"limit": {"5"}, "principal": {"ci"}}
		if token != "" {
			q.Set("page_token", token)
		}
		res := e.get(t, q)
		if res.status != http.StatusOK {
			t.Fatalf("status %d: %s", res.status, res.body)
		}
		// A bare array of records in the REST (snake_case) form.
		var items []map[string]any
		if err := json.Unmarshal([]byte(res.body), &items); err != nil {
			t.Fatalf("body is not a JSON array: %s", res.body)
		}
		for _, it := range items {
			for _, k := range []string{"id", "time", "principal", "auth_method", "action", "target", "outcome", "status_code", "correlation_id", "source", "idempotency_key"} {
				if _, ok := it[k]; !ok {
					t.Fatalf("record without %q: %v", k, it)
				}
			}
			if _, err := time.Parse(time.RFC3339Nano, it["time"].(string)); err != nil {
				t.Errorf("time %v is not RFC 3339", it["time"])
			}
			got = append(got, it["id"].(string))
		}
		if token = res.header.Get("X-Next-Page-Token"); token == "" {
			break
		}
	}
	if want := e.where(func(r store.AuditRecord) bool { return r.Principal == "ci" }); !slices.Equal(got, want) {
		t.Errorf("REST pages %v, want %v", got, want)
	}
}

// TestListAuditLimits checks the page size bounds, as for packages.
func TestListAuditLimits(t *testing.T) {
	t.Parallel()
	e := setupAudit(t, 1005)
	for _, tc := range []struct {
		limit int32
		want  int
	}{{0, 100}, {1, 1}, {1000, 1000}, {5000, 1000}} {
		t.Run(fmt.Sprint(tc.limit), func(t *testing.T) {
			t.Parallel()
			res, err := e.rpc.ListAuditRecords(t.Context(), &pmv1.ListAuditRecordsRequest{Limit: tc.limit})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.GetItems()) != tc.want || res.GetNextPageToken() == "" {
				t.Errorf("limit %d: %d items (next %q), want %d and a next page", tc.limit, len(res.GetItems()), res.GetNextPageToken(), tc.want)
			}
		})
	}
}

// TestListAuditBadInput checks that each bad parameter gets a 400 naming
// it, on REST and Connect.
func TestListAuditBadInput(t *testing.T) {
	t.Parallel()
	e := setupAudit(t, 3)
	wrongPrefix := base64.RawURLEncoding.EncodeToString([]byte("k:shop"))
	tests := []struct {
		name, param, value string
		extra              url.Values
	}{
		{"since not a time", "since", "yesterday", nil},
		{"since without zone", "since", "2026-01-02T03:04:05", nil},
		{"until not a time", "until", "2026-13-01T00:00:00Z", nil},
		{"until before since", "until", "2026-01-01T00:00:00Z", url.Values{"since": {"2026-02-01T00:00:00Z"}}},
		{"outcome", "outcome", "maybe", nil},
		{"negative limit", "limit", "-1", nil},
		{"page token garbage", "page_token", "!!!", nil},
		{"page token of another list", "page_token", wrongPrefix, nil},
		{"page token without id", "page_token", base64.RawURLEncoding.EncodeToString([]byte("a:123")), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			q := url.Values{tc.param: {tc.value}}
			for k, v := range tc.extra {
				q[k] = v
			}
			res := e.get(t, q)
			if res.status != http.StatusBadRequest || !strings.Contains(res.body, tc.param) {
				t.Errorf("REST: %d %s, want 400 naming %s", res.status, res.body, tc.param)
			}
			req := &pmv1.ListAuditRecordsRequest{Since: q.Get("since"), Until: q.Get("until"), Outcome: q.Get("outcome"), PageToken: q.Get("page_token")}
			if l := q.Get("limit"); l != "" {
				n, _ := strconv.Atoi(l)
				req.Limit = int32(n)
			}
			_, err := e.rpc.ListAuditRecords(t.Context(), req)
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.param) {
				t.Errorf("Connect: %v, want invalid_argument naming %s", err, tc.param)
			}
		})
	}
}
