package audit_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/emptypb"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/internal/audit"
	"github.com/oaas/pm/internal/auth"
	"github.com/oaas/pm/internal/store"
)

const (
	createPackage = "oaas.pm.v1.PackageService/CreatePackage"
	updatePackage = "oaas.pm.v1.PackageService/UpdatePackage"
	deletePackage = "oaas.pm.v1.PackageService/DeletePackage"
	getPackage    = "oaas.pm.v1.PackageService/GetPackage"
	listAudit     = "oaas.pm.v1.AuditService/ListAuditRecords"
)

// callFunc makes one call; its headers travel in ctx (withHeaders).
type callFunc func(ctx context.Context, c pmv1connect.PackageServiceClient, h *harness) error

func create(name, idemField string) callFunc {
	return func(ctx context.Context, c pmv1connect.PackageServiceClient, _ *harness) error {
		_, err := c.CreatePackage(ctx, &pmv1.CreatePackageRequest{Package: &pmv1.OPackage{Name: name}, IdempotencyKey: idemField})
		return err
	}
}

func update(name string) callFunc {
	return func(ctx context.Context, c pmv1connect.PackageServiceClient, _ *harness) error {
		_, err := c.UpdatePackage(ctx, &pmv1.UpdatePackageRequest{Name: name, Package: &pmv1.OPackage{Name: name}})
		return err
	}
}

func del(name string) callFunc {
	return func(ctx context.Context, c pmv1connect.PackageServiceClient, _ *harness) error {
		_, err := c.DeletePackage(ctx, &pmv1.DeletePackageRequest{Name: name})
		return err
	}
}

func get(name string) callFunc {
	return func(ctx context.Context, c pmv1connect.PackageServiceClient, _ *harness) error {
		_, err := c.GetPackage(ctx, &pmv1.GetPackageRequest{Name: name})
		return err
	}
}

func listAuditCall(p protocol) callFunc {
	return func(ctx context.Context, _ pmv1connect.PackageServiceClient, h *harness) error {
		c := pmv1connect.NewAuditServiceClient(h.client, h.url, p.option())
		_, err := c.ListAuditRecords(ctx, &pmv1.ListAuditRecordsRequest{Principal: "x"})
		return err
	}
}

// TestUnaryCalls drives each kind of call on every RPC protocol and checks
// the one record it leaves, or that it leaves none.
func TestUnaryCalls(t *testing.T) {
	t.Parallel()
	editor := store.AuditRecord{Principal: "editor-bot", Role: "editor", AuthMethod: "token", Source: "127.0.0.1"}
	viewer := store.AuditRecord{Principal: "viewer-bot", Role: "viewer", AuthMethod: "token", Source: "127.0.0.1"}
	anonymous := store.AuditRecord{Source: "127.0.0.1"}
	with := func(base store.AuditRecord, action, target string, outcome store.AuditOutcome, code string) *store.AuditRecord {
		base.Action, base.Target, base.Outcome, base.Code = action, target, outcome, code
		return &base
	}
	tests := []struct {
		name  string
		role  auth.Role
		token string // instead of the role's
		call  func(p protocol) callFunc
		hd    []string
		want  *store.AuditRecord // nil: no record
		// message is a part of the record's message ("" for none at all).
		message string
	}{
		{name: "allowed write", role: auth.Editor, call: fixed(create("shop", "")), hd: []string{"Idempotency-Key", "k-1"},
			want: withIdem(with(editor, createPackage, "shop", store.AuditOK, "ok"), "k-1")},
		{name: "idempotency key field", role: auth.Editor, call: fixed(create("shop", "k-field")), hd: []string{"Idempotency-Key", "k-header"},
			want: withIdem(with(editor, createPackage, "shop", store.AuditOK, "ok"), "k-field")},
		{name: "invalid write", role: auth.Editor, call: fixed(create("broken", "")),
			want: with(editor, createPackage, "broken", store.AuditError, "invalid_argument"), message: "classes: is required"},
		{name: "write of a missing object", role: auth.Editor, call: fixed(del("ghost")),
			want: with(editor, deletePackage, "ghost", store.AuditError, "not_found"), message: "not found"},
		{name: "internal failure", role: auth.Editor, call: fixed(update("crash")),
			want: with(editor, updatePackage, "crash", store.AuditError, "internal"), message: "internal error (correlation id corr-"},
		{name: "denied write", role: auth.Viewer, call: fixed(del("shop")),
			want: with(viewer, deletePackage, "shop", store.AuditDenied, "permission_denied"), message: "requires role editor"},
		{name: "successful read", role: auth.Viewer, call: fixed(get("shop"))},
		{name: "failed read", role: auth.Viewer, call: fixed(get("ghost"))},
		{name: "denied read", role: auth.Editor, call: listAuditCall,
			want: with(editor, listAudit, "", store.AuditDenied, "permission_denied"), message: "requires role admin"},
		{name: "unauthenticated write", call: fixed(del("shop")),
			want: with(anonymous, deletePackage, "", store.AuditDenied, "unauthenticated"), message: "authentication required"},
		{name: "bad token read", token: "not-a-token", call: fixed(get("shop")),
			want: with(anonymous, getPackage, "", store.AuditDenied, "unauthenticated"), message: "not a known API token"},
	}
	for _, tc := range tests {
		for _, p := range protocols {
			t.Run(tc.name+"/"+string(p), func(t *testing.T) {
				t.Parallel()
				h := setup(t, options{})
				corr := "corr-" + randomHex(t)
				hd := h.headers(tc.role, append([]string{"X-Correlation-Id", corr}, tc.hd...)...)
				if tc.token != "" {
					hd.Set("Authorization", "Bearer "+tc.token)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				err := tc.call(p)(withHeaders(ctx, hd), h.packages(p), h)
				if tc.want == nil {
					if recs := h.records(t); len(recs) != 0 {
						t.Fatalf("call (err %v) left records %+v, want none", err, recs)
					}
					return
				}
				if (tc.want.Outcome == store.AuditOK) != (err == nil) {
					t.Fatalf("call error %v, want outcome %s", err, tc.want.Outcome)
				}
				if err != nil && connect.CodeOf(err).String() != tc.want.Code {
					t.Errorf("caller got %v, the record must say %s", err, tc.want.Code)
				}
				got := h.only(t)
				want := *tc.want
				want.ID, want.Time, want.CorrelationID = got.ID, got.Time, corr
				if !strings.Contains(got.Message, tc.message) || (tc.message == "") != (got.Message == "") {
					t.Errorf("message %q, want one containing %q", got.Message, tc.message)
				}
				want.Message = got.Message
				if got != want {
					t.Errorf("record\n%+v\nwant\n%+v", got, want)
				}
				if strings.Contains(got.Message, secretText) {
					t.Errorf("the record carries the handler's raw error: %q", got.Message)
				}
			})
		}
	}
}

func fixed(c callFunc) func(protocol) callFunc { return func(protocol) callFunc { return c } }

func withIdem(r *store.AuditRecord, key string) *store.AuditRecord {
	r.IdempotencyKey = key
	return r
}

// TestCorrelationIDOfTheCall checks that a call without X-Correlation-Id is
// recorded with the id PM gave it, the one its response carries.
func TestCorrelationIDOfTheCall(t *testing.T) {
	t.Parallel()
	h := setup(t, options{})
	c := h.packages(protoConnect)
	ctx, info := connect.NewClientContext(t.Context())
	info.RequestHeader().Set("Authorization", h.headers(auth.Editor).Get("Authorization"))
	if _, err := c.CreatePackage(ctx, &pmv1.CreatePackageRequest{Package: &pmv1.OPackage{Name: "a"}}); err != nil {
		t.Fatal(err)
	}
	_, err := c.DeletePackage(withHeaders(t.Context(), h.headers(auth.Editor)), &pmv1.DeletePackageRequest{Name: "ghost"})
	var cerr *connect.Error
	if !errors.As(err, &cerr) {
		t.Fatalf("delete of ghost: %v, want a connect error", err)
	}
	recs := h.records(t)
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2", len(recs))
	}
	if id := info.ResponseHeader().Get("X-Correlation-Id"); id == "" || recs[1].CorrelationID != id {
		t.Errorf("success recorded with correlation id %q, response has %q", recs[1].CorrelationID, id)
	}
	if id := cerr.Meta().Get("X-Correlation-Id"); id == "" || recs[0].CorrelationID != id {
		t.Errorf("failure recorded with correlation id %q, error has %q", recs[0].CorrelationID, id)
	}
}

// TestREST checks calls through the transcoder, and refusals before it
// mapped to their RPC and object by the REST route table.
func TestREST(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		role       auth.Role
		method     string
		path, body string
		status     int
		want       *store.AuditRecord
	}{
		{"create", auth.Editor, http.MethodPost, "/api/v1/packages", `{"name": "shop"}`, http.StatusOK,
			&store.AuditRecord{Principal: "editor-bot", Role: "editor", AuthMethod: "token", Action: createPackage, Target: "shop",
				Outcome: store.AuditOK, Code: "ok", IdempotencyKey: "rest-key"}},
		{"denied delete", auth.Viewer, http.MethodDelete, "/api/v1/packages/shop", "", http.StatusForbidden,
			&store.AuditRecord{Principal: "viewer-bot", Role: "viewer", AuthMethod: "token", Action: deletePackage, Target: "shop",
				Outcome: store.AuditDenied, Code: "permission_denied", IdempotencyKey: "rest-key"}},
		{"unauthenticated delete", 0, http.MethodDelete, "/api/v1/packages/shop", "", http.StatusUnauthorized,
			&store.AuditRecord{Action: deletePackage, Target: "shop", Outcome: store.AuditDenied, Code: "unauthenticated", IdempotencyKey: "rest-key"}},
		{"unauthenticated audit read", 0, http.MethodGet, "/api/v1/audit", "", http.StatusUnauthorized,
			&store.AuditRecord{Action: listAudit, Outcome: store.AuditDenied, Code: "unauthenticated", IdempotencyKey: "rest-key"}},
		{"unauthenticated other path", 0, http.MethodGet, "/metrics", "", http.StatusUnauthorized,
			&store.AuditRecord{Action: "GET /metrics", Outcome: store.AuditDenied, Code: "unauthenticated", IdempotencyKey: "rest-key"}},
		{"read", auth.Viewer, http.MethodGet, "/api/v1/packages/shop", "", http.StatusOK, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := setup(t, options{})
			status := h.do(t, tc.method, tc.path, tc.body, h.headers(tc.role, "Idempotency-Key", "rest-key", "X-Correlation-Id", "c-rest"))
			if status != tc.status {
				t.Errorf("status %d, want %d", status, tc.status)
			}
			if tc.want == nil {
				if recs := h.records(t); len(recs) != 0 {
					t.Fatalf("records %+v, want none", recs)
				}
				return
			}
			got := h.only(t)
			want := *tc.want
			want.ID, want.Time, want.Message = got.ID, got.Time, got.Message
			want.Source, want.CorrelationID = "127.0.0.1", "c-rest"
			if got != want {
				t.Errorf("record\n%+v\nwant\n%+v", got, want)
			}
			if (want.Outcome == store.AuditDenied) != (got.Message != "") {
				t.Errorf("message %q", got.Message)
			}
		})
	}
}

// TestStreams checks that streaming calls are recorded as unary ones are,
// with the target of the first message.
func TestStreams(t *testing.T) {
	t.Parallel()
	const action = "oaas.pm.v1.DeploymentService/UpdateDeployment"
	tests := []struct {
		name    string
		role    auth.Role
		write   []string // names sent on the write stream; nil: use the read stream
		outcome store.AuditOutcome
		code    string
		target  string
	}{
		{"allowed write", auth.Editor, []string{"s1", "s2"}, store.AuditOK, "ok", "s1"},
		{"failed write", auth.Editor, []string{"s1", "broken"}, store.AuditError, "failed_precondition", "s1"},
		{"denied write", auth.Viewer, []string{"s1"}, store.AuditDenied, "permission_denied", ""},
		{"read", auth.Viewer, nil, "", "", ""},
	}
	for _, tc := range tests {
		for _, p := range protocols {
			t.Run(tc.name+"/"+string(p), func(t *testing.T) {
				t.Parallel()
				h := setup(t, options{})
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				hd := h.headers(tc.role, "X-Correlation-Id", "c-stream")
				if tc.write == nil {
					c := connect.NewClient[pmv1.GetPackageRequest, pmv1.OPackage](h.client, h.url+streamRead, p.option())
					s, err := c.CallServerStream(ctx, request(&pmv1.GetPackageRequest{Name: "r"}, hd))
					if err != nil {
						t.Fatal(err)
					}
					for s.Receive() {
					}
					if err := s.Err(); err != nil {
						t.Fatal(err)
					}
					_ = s.Close()
					if recs := h.records(t); len(recs) != 0 {
						t.Fatalf("a read stream left records %+v", recs)
					}
					return
				}
				c := connect.NewClient[pmv1.UpdatePackageRequest, emptyMsg](h.client, h.url+streamWrite, p.option())
				s := c.CallClientStream(ctx)
				for k, v := range hd {
					s.RequestHeader()[k] = v
				}
				for _, name := range tc.write {
					if err := s.Send(&pmv1.UpdatePackageRequest{Name: name}); err != nil {
						break // the server may have answered already
					}
				}
				_, err := s.CloseAndReceive()
				if got := connect.CodeOf(err); (err == nil) != (tc.outcome == store.AuditOK) || (err != nil && got.String() != tc.code) {
					t.Fatalf("stream ended with %v, want %s", err, tc.code)
				}
				got := h.only(t)
				if got.Action != action || got.Outcome != tc.outcome || got.Code != tc.code || got.Target != tc.target ||
					got.Principal != tc.role.String()+"-bot" || got.CorrelationID != "c-stream" || got.Source != "127.0.0.1" {
					t.Errorf("record %+v, want %s %s %s target %q", got, action, tc.outcome, tc.code, tc.target)
				}
			})
		}
	}
}

// emptyMsg is the write stream's response type.
type emptyMsg = emptypb.Empty

// TestSource checks where the source address comes from.
func TestSource(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		trust bool
		xff   string
		want  string
	}{
		{"peer", false, "", "127.0.0.1"},
		{"forwarded for, not trusted", false, "203.0.113.9, 10.0.0.1", "127.0.0.1"},
		{"forwarded for, trusted", true, "203.0.113.9, 10.0.0.1", "203.0.113.9"},
		{"forwarded for v6, trusted", true, "2001:db8::7", "2001:db8::7"},
		{"forwarded for garbage, trusted", true, "<script>, 10.0.0.1", "127.0.0.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := setup(t, options{trustForwardedFor: tc.trust})
			hd := h.headers(auth.Editor)
			if tc.xff != "" {
				hd.Set("X-Forwarded-For", tc.xff)
			}
			if err := create("s", "")(withHeaders(t.Context(), hd), h.packages(protoGRPC), h); err != nil {
				t.Fatal(err)
			}
			if got := h.only(t).Source; got != tc.want {
				t.Errorf("source %q, want %q", got, tc.want)
			}
		})
	}
}

// failingAudit is a store whose appends fail.
type failingAudit struct{}

func (failingAudit) AppendAudit(context.Context, store.AuditRecord) (store.AuditRecord, error) {
	return store.AuditRecord{}, store.ErrUnavailable
}

func (failingAudit) ListAudit(context.Context, store.AuditFilter) ([]store.AuditRecord, error) {
	return nil, store.ErrUnavailable
}

func (failingAudit) PurgeAudit(context.Context, time.Time) (int, error) {
	return 0, store.ErrUnavailable
}

// TestWriteFailure checks that a record the store refuses changes nothing
// for the caller, and is logged and counted.
func TestWriteFailure(t *testing.T) {
	t.Parallel()
	h := setup(t, options{audit: failingAudit{}})
	c := h.packages(protoConnect)
	res, err := c.CreatePackage(withHeaders(t.Context(), h.headers(auth.Editor)), &pmv1.CreatePackageRequest{Package: &pmv1.OPackage{Name: "kept"}})
	if err != nil || res.GetPackage().GetName() != "kept" {
		t.Fatalf("create with a failing audit store: %v %v; want the normal response", res, err)
	}
	_, err = c.DeletePackage(withHeaders(t.Context(), h.headers(auth.Editor)), &pmv1.DeletePackageRequest{Name: "ghost"})
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("delete of ghost: %v, want not_found as without auditing", err)
	}
	if got := h.rec.WriteFailures(); got != 2 {
		t.Errorf("write failures %d, want 2", got)
	}
	if s := h.rec.Stats(); s["write_failures"] != 2 || s["records"] != 0 {
		t.Errorf("stats %v", s)
	}
	logs := h.logs.String()
	if strings.Count(logs, `"msg":"audit record not stored"`) != 2 || !strings.Contains(logs, `"level":"ERROR"`) {
		t.Errorf("failures not logged at error:\n%s", logs)
	}
	// The log still has the records.
	if strings.Count(logs, `"msg":"audit"`) != 2 || !strings.Contains(logs, `"target":"kept"`) {
		t.Errorf("records not logged:\n%s", logs)
	}
}

// TestDeniedCap checks that one source's denials stop being stored past
// the cap, and that writes are never capped.
func TestDeniedCap(t *testing.T) {
	t.Parallel()
	h := setup(t, options{deniedPerMinute: 3})
	c := h.packages(protoConnect)
	for range 5 {
		if _, err := c.DeletePackage(withHeaders(t.Context(), h.headers(0)), &pmv1.DeletePackageRequest{Name: "x"}); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("anonymous delete: %v", err)
		}
	}
	for range 5 {
		if _, err := c.CreatePackage(withHeaders(t.Context(), h.headers(auth.Editor)), &pmv1.CreatePackageRequest{Package: &pmv1.OPackage{Name: "x"}}); err != nil {
			t.Fatal(err)
		}
	}
	denied, ok := 0, 0
	for _, r := range h.records(t) {
		switch r.Outcome {
		case store.AuditDenied:
			denied++
		case store.AuditOK:
			ok++
		}
	}
	if denied != 3 || ok != 5 {
		t.Errorf("%d denied and %d ok records, want 3 and 5", denied, ok)
	}
	if s := h.rec.Stats(); s["suppressed"] != 2 || s["records"] != 8 {
		t.Errorf("stats %v, want 2 suppressed, 8 records", s)
	}
	if n := strings.Count(h.logs.String(), "too many denied calls from one source"); n != 1 {
		t.Errorf("suppression logged %d times, want once", n)
	}
}

// TestNoSecrets drives allowed, denied and refused calls with every token
// (and a wrong one) and looks for the credentials in the logs and records.
func TestNoSecrets(t *testing.T) {
	t.Parallel()
	h := setup(t, options{})
	wrong := "wrong-" + randomHex(t)
	for _, p := range protocols {
		c := h.packages(p)
		for _, r := range auth.Roles() {
			_ = create("p", "")(withHeaders(t.Context(), h.headers(r)), c, h)
			_ = del("ghost")(withHeaders(t.Context(), h.headers(r)), c, h)
			_ = update("crash")(withHeaders(t.Context(), h.headers(r)), c, h)
		}
		hd := h.headers(0)
		hd.Set("Authorization", "Bearer "+wrong)
		_ = del("p")(withHeaders(t.Context(), hd), c, h)
	}
	h.do(t, http.MethodDelete, "/api/v1/packages/p", "", http.Header{"Authorization": {"Bearer " + wrong}})
	recs := h.records(t)
	logs := h.logs.String()
	if len(recs) < 10 || strings.Count(logs, `"msg":"audit"`) != len(recs) {
		t.Fatalf("%d records, %d audit log lines: the search below would prove nothing", len(recs), strings.Count(logs, `"msg":"audit"`))
	}
	secrets := []string{wrong, secretText, "Bearer"}
	for _, tok := range h.tokens {
		secrets = append(secrets, tok)
	}
	var auditLines []string
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, `"msg":"audit"`) {
			auditLines = append(auditLines, line)
		}
	}
	for _, s := range secrets {
		// The api interceptor logs unclassified errors in full for
		// operators (secretText among them); credentials go nowhere.
		if s != secretText && strings.Contains(logs, s) {
			t.Errorf("logs contain %q", s)
		}
		if strings.Contains(strings.Join(auditLines, "\n"), s) {
			t.Errorf("audit log lines contain %q", s)
		}
		for _, r := range recs {
			if strings.Contains(strings.Join([]string{r.Principal, r.Role, r.AuthMethod, r.Action, r.Target, r.Message,
				r.CorrelationID, r.Source, r.IdempotencyKey, r.Code}, "\x00"), s) {
				t.Errorf("record %+v contains %q", r, s)
			}
		}
	}
}

// TestReadOnlyFromDescriptors walks every RPC PM registers: reads (Get,
// List, Watch) are read-only by their descriptor, everything else is
// audited as a write, with no list to keep in step.
func TestReadOnlyFromDescriptors(t *testing.T) {
	t.Parallel()
	n := 0
	protoregistry.GlobalFiles.RangeFilesByPackage("oaas.pm.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				md := sd.Methods().Get(j)
				n++
				name := string(md.Name())
				read := strings.HasPrefix(name, "Get") || strings.HasPrefix(name, "List") || strings.HasPrefix(name, "Watch")
				// The spec's own level is left unknown: the descriptor decides.
				spec := connect.Spec{Schema: md, Procedure: "/" + string(sd.FullName()) + "/" + name}
				if got := audit.ReadOnly(spec); got != read {
					t.Errorf("%s: ReadOnly = %v, want %v (declare idempotency_level = NO_SIDE_EFFECTS on reads)", spec.Procedure, got, read)
				}
			}
		}
		return true
	})
	if n < 10 {
		t.Fatalf("only %d RPCs registered", n)
	}
	// Without a descriptor, the spec's level decides.
	if !audit.ReadOnly(connect.Spec{IdempotencyLevel: connect.IdempotencyNoSideEffects}) || audit.ReadOnly(connect.Spec{}) {
		t.Error("ReadOnly ignores the spec's idempotency level")
	}
	for _, proc := range []string{"/grpc.health.v1.Health/Watch", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
		"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"} {
		if !audit.ReadOnly(connect.Spec{Procedure: proc, StreamType: connect.StreamTypeBidi}) {
			t.Errorf("%s counts as a write", proc)
		}
	}
}
