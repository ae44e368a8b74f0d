package app_test

// Tests of the request boundary (issue 9): every protocol gets the same
// limits, the same field policy and clean errors.

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/store/pgtest"
)

// leaks are fragments that must never reach a client: Go type names,
// protobuf internals, driver and runtime text.
var leaks = []string{"proto:", "unmarshal", "pmv1", "*v1.", "interface {}", "context deadline", "pgx", "SQLSTATE", "goroutine"}

func assertClean(t *testing.T, msg string) {
	t.Helper()
	for _, l := range leaks {
		if strings.Contains(msg, l) {
			t.Errorf("client-facing text %q contains %q", msg, l)
		}
	}
}

// gzipJSON compresses a package whose description holds n bytes: a few
// hundred KB on the wire that expand to n bytes.
func gzipJSON(t *testing.T, prefix string, n int, suffix string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	_, _ = zw.Write([]byte(prefix))
	chunk := bytes.Repeat([]byte("a"), 1<<20)
	for written := 0; written < n; written += len(chunk) {
		_, _ = zw.Write(chunk)
	}
	_, _ = zw.Write([]byte(suffix))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// allocated runs fn and returns the bytes the process allocated meanwhile
// (other tests running in parallel add a little noise; the bombs below are
// hundreds of MB, so the bound stays meaningful).
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func rawPost(t *testing.T, client *http.Client, url string, body []byte, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return response{status: res.StatusCode, header: res.Header, body: raw}
}

func TestBoundaryBodyLimitsEveryProtocol(t *testing.T) {
	t.Parallel()
	const limit = 64 << 10
	e := setup(t, "memory", func(c *config.Config) { c.Server.MaxBodyBytes = limit })
	const bomb = 300 << 20 // 300 MB once decompressed

	t.Run("REST gzip bomb", func(t *testing.T) {
		body := gzipJSON(t, `{"name":"bomb","metadata":{"description":"`, bomb, `"}}`)
		var r response
		if n := allocated(func() {
			r = rawPost(t, e.http1, e.base+"/api/v1/packages", body, "Content-Type", "application/json", "Content-Encoding", "gzip")
		}); n > 64<<20 {
			t.Errorf("a %d-byte gzip body made PM allocate %d MB", len(body), n>>20)
		}
		r.expect(t, http.StatusRequestEntityTooLarge)
		if msg := r.errorText(t); !strings.Contains(msg, fmt.Sprint(limit)) {
			t.Errorf("413 message %q does not give the limit", msg)
		}
	})
	t.Run("REST plain", func(t *testing.T) {
		body := `{"name":"big","metadata":{"description":"` + strings.Repeat("a", limit) + `"}}`
		e.do("POST", "/api/v1/packages", body).expect(t, http.StatusRequestEntityTooLarge)
	})
	t.Run("Connect JSON gzip bomb", func(t *testing.T) {
		body := gzipJSON(t, `{"package":{"name":"bomb","metadata":{"description":"`, bomb, `"}}}`)
		var r response
		if n := allocated(func() {
			r = rawPost(t, e.h2c, e.base+pmv1connect.PackageServiceCreatePackageProcedure, body,
				"Content-Type", "application/json", "Content-Encoding", "gzip", "Connect-Protocol-Version", "1")
		}); n > 64<<20 {
			t.Errorf("a %d-byte gzip body made PM allocate %d MB", len(body), n>>20)
		}
		if r.status != http.StatusTooManyRequests || !bytes.Contains(r.body, []byte("resource_exhausted")) {
			t.Errorf("status %d body %s, want 429 resource_exhausted", r.status, r.body)
		}
	})
	big := samplePackage("big")
	big.Metadata.Description = proto.String(strings.Repeat("a", limit))
	for _, p := range protocols {
		for _, gz := range []bool{false, true} {
			name := p.name
			opts := p.opts
			if gz {
				name += "+gzip"
				opts = append(append([]connect.ClientOption{}, opts...), connect.WithSendGzip())
			}
			t.Run(name, func(t *testing.T) {
				client := pmv1connect.NewPackageServiceClient(e.h2c, e.base, opts...)
				_, err := client.CreatePackage(context.Background(), &pmv1.CreatePackageRequest{Package: big})
				if connect.CodeOf(err) != connect.CodeResourceExhausted {
					t.Fatalf("err = %v, want resource_exhausted", err)
				}
				assertClean(t, err.Error())
			})
		}
	}
	var list []any
	e.do("GET", "/api/v1/packages", nil).expect(t, http.StatusOK).json(t, &list)
	if len(list) != 0 {
		t.Errorf("oversize requests stored %d packages", len(list))
	}
}

// withDefaultCluster gives a PM one simulated cluster named "default".
func withDefaultCluster(t *testing.T) func(*config.Config) {
	return withFleet(startFleet(t, "default"))
}

// forEachStorageWith is forEachStorage with config tweaks.
func forEachStorageWith(t *testing.T, tweak func(*config.Config), fn func(t *testing.T, e *env)) {
	t.Helper()
	for _, st := range storages {
		t.Run(st, func(t *testing.T) {
			t.Parallel()
			fn(t, setup(t, st, tweak))
		})
	}
}

func TestBoundaryPathNamesTheObject(t *testing.T) {
	t.Parallel()
	forEachStorageWith(t, withDefaultCluster(t), func(t *testing.T, e *env) {
		for _, n := range []string{"decoy", "victim"} {
			e.do("POST", "/api/v1/packages", echoPackage(n)).expect(t, http.StatusCreated)
		}
		e.do("POST", "/api/v1/deployments", deployment("d1", "decoy", "default")).expect(t, http.StatusCreated)
		e.do("POST", "/api/v1/deployments", deployment("d2", "victim", "default")).expect(t, http.StatusCreated)
		cases := []struct {
			method, path string
			mention      string
		}{
			{"DELETE", "/api/v1/packages/decoy?name=victim", "conflicts with the path"},
			{"GET", "/api/v1/packages/decoy?name=victim", "conflicts with the path"},
			{"POST", "/api/v1/packages/decoy?name=victim", "conflicts with the path"},
			{"DELETE", "/api/v1/deployments/d1?key=d2", "conflicts with the path"},
			{"GET", "/api/v1/deployments/d1?key=d2", "conflicts with the path"},
			{"DELETE", "/api/v1/deployments/d1?cluster=", `"cluster" is empty`},
			{"GET", "/api/v1/packages?name_pattern=a&name_pattern=b", "given 2 times"},
			{"GET", "/api/v1/packages?limit=ten", `"ten" is not an integer`},
			{"POST", "/api/v1/packages?package.name=victim", "request body"},
		}
		for _, c := range cases {
			t.Run(c.method+" "+c.path, func(t *testing.T) {
				var body any
				if c.method == "POST" {
					body = echoPackage("decoy")
				}
				msg := e.do(c.method, c.path, body).expect(t, http.StatusBadRequest).errorText(t)
				if !strings.Contains(msg, c.mention) {
					t.Errorf("error %q does not mention %q", msg, c.mention)
				}
				assertClean(t, msg)
			})
		}
		// A query parameter that agrees with the path changes nothing.
		e.do("GET", "/api/v1/packages/decoy?name=decoy", nil).expect(t, http.StatusOK)
		for _, p := range []string{"/api/v1/packages/victim", "/api/v1/packages/decoy", "/api/v1/deployments/d1", "/api/v1/deployments/d2"} {
			e.do("GET", p, nil).expect(t, http.StatusOK)
		}
	})
}

func TestBoundaryContentTypes(t *testing.T) {
	t.Parallel()
	e := setup(t, "memory")
	e.do("POST", "/api/v1/packages", echoPackage("p")).expect(t, http.StatusCreated)
	update, _ := json.Marshal(echoPackage("p"))
	for _, ct := range []string{"application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", ""} {
		t.Run(ct, func(t *testing.T) {
			// The three content types a web page may send without a CORS
			// preflight, and none at all, can never write.
			msg := e.send("POST", "/api/v1/packages/p", ct, update, "If-Match", `"1"`).expect(t, http.StatusUnsupportedMediaType).errorText(t)
			assertClean(t, msg)
		})
	}
	if etag := e.do("GET", "/api/v1/packages/p", nil).expect(t, http.StatusOK).header.Get("ETag"); etag != `"1"` {
		t.Errorf("refused writes changed the package: ETag %s", etag)
	}
}

func TestBoundaryInvalidUTF8(t *testing.T) {
	t.Parallel()
	e := setup(t, "memory")
	for _, path := range []string{"/api/v1/packages/a%FFb", "/api/v1/packages?name_pattern=%FF", "/api/v1/deployments?package_name=%C3%28"} {
		msg := e.do("GET", path, nil).expect(t, http.StatusBadRequest).errorText(t)
		if !strings.Contains(msg, "UTF-8") {
			t.Errorf("GET %s: %q does not say UTF-8", path, msg)
		}
	}
	msg := e.do("POST", "/api/v1/packages", "{\"name\":\"a\xffb\"}").expect(t, http.StatusBadRequest).errorText(t)
	if !strings.Contains(msg, "UTF-8") {
		t.Errorf("REST body: %q", msg)
	}
	// Connect JSON.
	r := rawPost(t, e.h2c, e.base+pmv1connect.PackageServiceCreatePackageProcedure, []byte("{\"package\":{\"name\":\"a\xffb\"}}"),
		"Content-Type", "application/json", "Connect-Protocol-Version", "1")
	if r.status != http.StatusBadRequest || !bytes.Contains(r.body, []byte("UTF-8")) {
		t.Errorf("Connect JSON: %d %s", r.status, r.body)
	}
	assertClean(t, string(r.body))
	// Binary: field 1 (package), field 1 (name) holding 0xff.
	inner := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "a\xffb")
	msgBytes := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), inner)
	r = rawPost(t, e.h2c, e.base+pmv1connect.PackageServiceCreatePackageProcedure, msgBytes,
		"Content-Type", "application/proto", "Connect-Protocol-Version", "1")
	if r.status != http.StatusBadRequest || !bytes.Contains(r.body, []byte("UTF-8")) {
		t.Errorf("Connect proto: %d %s", r.status, r.body)
	}
	assertClean(t, string(r.body))
}

func TestBoundaryUnknownFieldPolicy(t *testing.T) {
	t.Parallel()
	typo := fixture(t, "strict/unknown-field.json") // {"name": "typo-pkg", "clases": [...]}
	forEachStorage(t, func(t *testing.T, e *env) {
		for _, strict := range []struct{ path, header string }{
			{"/api/v1/packages?field_validation=Strict", ""},
			{"/api/v1/packages", "Strict"},
			{"/api/v1/packages?field_validation=strict", ""},
		} {
			var hdr []string
			if strict.header != "" {
				hdr = []string{"Field-Validation", strict.header}
			}
			msg := e.do("POST", strict.path, typo, hdr...).expect(t, http.StatusBadRequest).errorText(t)
			if !strings.Contains(msg, `unknown field "clases"`) {
				t.Errorf("strict error %q does not name the field", msg)
			}
		}
		e.do("GET", "/api/v1/packages/typo-pkg", nil).expect(t, http.StatusNotFound)

		r := e.do("POST", "/api/v1/packages", typo).expect(t, http.StatusCreated)
		if got := r.header.Values("Warning"); len(got) != 1 || got[0] != `299 - "unknown field \"clases\""` {
			t.Errorf("Warning headers = %q", got)
		}
		r = e.do("GET", "/api/v1/packages?colour=red", nil).expect(t, http.StatusOK)
		if got := r.header.Values("Warning"); len(got) != 1 || got[0] != `299 - "unknown query parameter \"colour\""` {
			t.Errorf("Warning headers = %q", got)
		}
		if r := e.do("GET", "/api/v1/packages?colour=red&field_validation=Ignore", nil).expect(t, http.StatusOK); len(r.header.Values("Warning")) != 0 {
			t.Errorf("Ignore still warns: %q", r.header.Values("Warning"))
		}
		e.do("GET", "/api/v1/packages?field_validation=Loose", nil).expect(t, http.StatusBadRequest)

		// Connect JSON: same policy, paths from the request message.
		body := []byte(`{"package": {"name": "typo-connect", "clases": [{"key": "A"}], "metadata": {"colour": "red"}}}`)
		for _, mode := range []string{"Strict", ""} {
			r := rawPost(t, e.h2c, e.base+pmv1connect.PackageServiceCreatePackageProcedure, body,
				"Content-Type", "application/json", "Connect-Protocol-Version", "1", "Field-Validation", mode)
			if mode == "Strict" {
				if r.status != http.StatusBadRequest || !bytes.Contains(r.body, []byte(`package.clases`)) || !bytes.Contains(r.body, []byte(`package.metadata.colour`)) {
					t.Errorf("Connect strict: %d %s", r.status, r.body)
				}
				continue
			}
			want := []string{`299 - "unknown field \"package.clases\""`, `299 - "unknown field \"package.metadata.colour\""`}
			if r.status != http.StatusOK || strings.Join(r.header.Values("Warning"), "|") != strings.Join(want, "|") {
				t.Errorf("Connect warn: %d %q %s", r.status, r.header.Values("Warning"), r.body)
			}
		}

		// gRPC binary: a newer client's field 42 is reported by number.
		pkg := samplePackage("typo-grpc")
		raw, _ := proto.Marshal(pkg)
		raw = protowire.AppendVarint(protowire.AppendTag(raw, 42, protowire.VarintType), 1)
		withUnknown := &pmv1.OPackage{}
		if err := proto.Unmarshal(raw, withUnknown); err != nil {
			t.Fatal(err)
		}
		client := pmv1connect.NewPackageServiceClient(e.h2c, e.base, connect.WithGRPC())
		ctx, call := connect.NewClientContext(context.Background())
		call.RequestHeader().Set("Field-Validation", "Strict")
		if _, err := client.CreatePackage(ctx, &pmv1.CreatePackageRequest{Package: withUnknown}); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "package.#42") {
			t.Errorf("gRPC strict: %v", err)
		}
		ctx, call = connect.NewClientContext(context.Background())
		if _, err := client.CreatePackage(ctx, &pmv1.CreatePackageRequest{Package: withUnknown}); err != nil {
			t.Fatalf("gRPC warn: %v", err)
		}
		if got := call.ResponseHeader().Values("Warning"); len(got) != 1 || got[0] != `299 - "unknown field \"package.#42\""` {
			t.Errorf("gRPC Warning = %q", got)
		}
	})
}

func TestBoundaryEnumsAndAliasesEveryFace(t *testing.T) {
	t.Parallel()
	e := setup(t, "memory", withDefaultCluster(t))
	e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, http.StatusCreated)
	// An unknown enum name is 400 on Connect JSON too (it used to be stored
	// as CUSTOM).
	r := rawPost(t, e.h2c, e.base+pmv1connect.PackageServiceCreatePackageProcedure,
		[]byte(`{"package": {"name": "nope", "functions": [{"key": "f", "function_type": "NOPE"}]}}`),
		"Content-Type", "application/json", "Connect-Protocol-Version", "1")
	if r.status != http.StatusBadRequest || !bytes.Contains(r.body, []byte(`unknown value \"NOPE\"`)) {
		t.Errorf("Connect enum name: %d %s", r.status, r.body)
	}
	// gRPC with an undefined number.
	client := pmv1connect.NewPackageServiceClient(e.h2c, e.base, connect.WithGRPC())
	bad := samplePackage("nine")
	bad.Functions[0].FunctionType = 9
	if _, err := client.CreatePackage(context.Background(), &pmv1.CreatePackageRequest{Package: bad}); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("gRPC enum number: %v", err)
	}
	e.do("GET", "/api/v1/packages/nope", nil).expect(t, http.StatusNotFound)
	e.do("GET", "/api/v1/packages/nine", nil).expect(t, http.StatusNotFound)

	// target_clusters on Connect JSON: an unknown cluster is refused, not
	// silently replaced by "default".
	r = rawPost(t, e.h2c, e.base+pmv1connect.DeploymentServiceCreateDeploymentProcedure,
		[]byte(`{"deployment": {"key": "d", "package_name": "echo", "class_key": "Echo", "target_clusters": ["prod-eu"]}}`),
		"Content-Type", "application/json", "Connect-Protocol-Version", "1")
	if r.status != http.StatusBadRequest || !bytes.Contains(r.body, []byte("prod-eu")) {
		t.Errorf("Connect target_clusters: %d %s", r.status, r.body)
	}
	e.do("GET", "/api/v1/deployments/d", nil).expect(t, http.StatusNotFound)
	r = rawPost(t, e.h2c, e.base+pmv1connect.DeploymentServiceCreateDeploymentProcedure,
		[]byte(`{"deployment": {"key": "d", "package_name": "echo", "class_key": "Echo", "targetClusters": ["default"]}}`),
		"Content-Type", "application/json", "Connect-Protocol-Version", "1")
	if r.status != http.StatusOK {
		t.Errorf("Connect targetClusters: %d %s", r.status, r.body)
	}
}

func TestBoundaryDistinctDeploymentsNeverConflict(t *testing.T) {
	t.Parallel()
	forEachStorageWith(t, withDefaultCluster(t), func(t *testing.T, e *env) {
		e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, http.StatusCreated)
		const clients, total = 16, 300
		var next, conflicts atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan string, total)
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1)
					if i > total {
						return
					}
					r := e.do("POST", "/api/v1/deployments", deployment(fmt.Sprintf("d%03d", i), "echo", "default"))
					if r.status == http.StatusConflict {
						conflicts.Add(1)
					}
					if r.status != http.StatusCreated {
						errs <- fmt.Sprintf("%d %s", r.status, r.body)
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for msg := range errs {
			t.Errorf("create: %s", msg)
		}
		if conflicts.Load() > 0 {
			t.Errorf("%d of %d distinct creates got 409", conflicts.Load(), total)
		}
	})
}

func TestBoundarySlowClientsAreCutOff(t *testing.T) {
	t.Parallel()
	e := setup(t, "memory", func(c *config.Config) { c.Server.ReadTimeout = time.Second })
	const conns = 5
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			start := time.Now()
			_, _ = fmt.Fprintf(conn, "POST /api/v1/packages HTTP/1.1\r\nHost: pm\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
			// Trickle one byte every 200ms until the server gives up.
			closed := make(chan struct{})
			go func() {
				_, _ = io.Copy(io.Discard, conn)
				close(closed)
			}()
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-closed:
					if d := time.Since(start); d > 5*time.Second {
						t.Errorf("connection lived %s with a 1s read timeout", d)
					}
					return
				case <-tick.C:
					if time.Since(start) > 10*time.Second {
						t.Error("a trickling client was still connected after 10s with a 1s read timeout")
						return
					}
					_, _ = conn.Write([]byte("x"))
				}
			}
		}()
	}
	wg.Wait()
}

func TestBoundaryConnectionCap(t *testing.T) {
	t.Parallel()
	e := setup(t, "memory", func(c *config.Config) { c.Server.MaxConnections = 2 })
	addr := strings.TrimPrefix(e.base, "http://")
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		// A request proves the server accepted the connection.
		_, _ = fmt.Fprintf(c, "GET /livez HTTP/1.1\r\nHost: pm\r\n\r\n")
		buf := make([]byte, 12)
		if _, err := io.ReadFull(c, buf); err != nil || !strings.HasPrefix(string(buf), "HTTP/1.1 200") {
			t.Fatalf("held connection: %q %v", buf, err)
		}
	}
	client := &http.Client{Timeout: 500 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	if res, err := client.Get(e.base + "/livez"); err == nil {
		res.Body.Close()
		t.Fatal("a third connection was served while two were held (cap 2)")
	}
	_ = held[0].Close()
	client.Timeout = 5 * time.Second
	res, err := client.Get(e.base + "/livez")
	if err != nil {
		t.Fatalf("after releasing one connection: %v", err)
	}
	res.Body.Close()
	_ = held[1].Close()
}

func TestBoundaryProbes(t *testing.T) {
	t.Parallel()
	e := setup(t, "memory")
	for _, p := range []string{"/livez", "/readyz", "/health"} {
		var body map[string]any
		e.do("GET", p, nil).expect(t, http.StatusOK).json(t, &body)
		if body["status"] == nil || body["timestamp"] == nil {
			t.Errorf("%s body %v", p, body)
		}
	}
	var h map[string]any
	e.do("GET", "/health", nil).json(t, &h)
	if st, _ := h["storage"].(map[string]any); h["service"] != "oaas-pm" || h["version"] == nil || st["status"] != "ok" || st["type"] != "memory" {
		t.Errorf("/health = %v", h)
	}
}

func TestBoundaryReadyzFollowsTheSchema(t *testing.T) {
	t.Parallel()
	e := setup(t, "memory", func(c *config.Config) {
		c.Storage.Type = "postgres"
		c.Storage.DatabaseURL = pgtest.NewEmptyDatabase(t)
		c.Storage.AutoMigrate = false
		c.Storage.MaxConns = 4
	})
	e.do("GET", "/livez", nil).expect(t, http.StatusOK)
	for _, p := range []string{"/readyz", "/health"} {
		var body map[string]any
		e.do("GET", p, nil).expect(t, http.StatusServiceUnavailable).json(t, &body)
		storage, _ := body["storage"].(map[string]any)
		if msg, _ := storage["message"].(string); storage["status"] != "error" || !strings.Contains(msg, "pm migrate up") {
			t.Errorf("%s: storage %v does not say how to fix it", p, storage)
		}
	}
	// A call that needs the schema fails cleanly meanwhile.
	msg := e.do("GET", "/api/v1/packages", nil).expect(t, http.StatusServiceUnavailable).errorText(t)
	assertClean(t, msg)
}
