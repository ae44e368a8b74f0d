package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/internal/version"
)

// conn is a connection to one PM: the generated Connect clients over one
// HTTP client, with the token, the field-validation mode and the warning
// printer applied to every call.
type conn struct {
	base   string
	http   *http.Client
	token  string
	codec  *rawJSONCodec
	warnTo io.Writer
	// options are the client options of every call (codec, headers).
	options []connect.ClientOption

	packages    pmv1connect.PackageServiceClient
	deployments pmv1connect.DeploymentServiceClient
	clusters    pmv1connect.ClusterServiceClient
	runtimes    pmv1connect.ClassRuntimeServiceClient
	watches     pmv1connect.WatchServiceClient
}

// validation modes of --validate, as the Field-Validation header spells them.
var validationModes = map[string]string{"strict": "Strict", "warn": "Warn", "ignore": "Ignore"}

// connect returns the invocation's connection to PM, building it on first use.
func (a *app) connect(cmd *cobra.Command) (*conn, error) {
	if a.conn != nil {
		return a.conn, nil
	}
	t, err := a.resolve(cmd)
	if err != nil {
		return nil, err
	}
	mode := "Strict"
	if a.validate != "" {
		m, ok := validationModes[strings.ToLower(a.validate)]
		if !ok {
			return nil, usageErr("--validate %q is not one of strict, warn, ignore", a.validate)
		}
		mode = m
	}
	c, err := dial(t, mode, a.requestTimeout, a.streams.Err)
	if err != nil {
		return nil, err
	}
	a.conn = c
	return c, nil
}

// dial builds the clients for t. Plain http:// speaks HTTP/1.1 (which
// Connect's unary calls need, and every proxy passes); https:// negotiates
// HTTP/2.
func dial(t target, mode string, timeout time.Duration, warnTo io.Writer) (*conn, error) {
	u, err := url.Parse(t.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, failf(ExitUsage, "server %q is not an http:// or https:// URL", t.server)
	}
	base := strings.TrimRight(u.String(), "/")
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if u.Scheme == "https" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: t.insecure} //nolint:gosec // the user asked for it (--insecure-skip-verify)
		if t.caFile != "" {
			pem, err := os.ReadFile(t.caFile)
			if err != nil {
				return nil, failf(ExitError, "reading --ca-file %s: %v", t.caFile, unwrapPath(err))
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, failf(ExitError, "--ca-file %s holds no PEM certificate", t.caFile)
			}
			cfg.RootCAs = pool
		}
		tr.TLSClientConfig = cfg
		tr.ForceAttemptHTTP2 = true
	} else if t.caFile != "" || t.insecure {
		_, _ = fmt.Fprintf(warnTo, "warning: %s is not https://; --ca-file and --insecure-skip-verify have no effect\n", base)
	}
	hc := &http.Client{Transport: tr, Timeout: timeout}
	c := &conn{base: base, http: hc, token: t.token, codec: &rawJSONCodec{}, warnTo: warnTo}
	opts := []connect.ClientOption{
		connect.WithCodec(c.codec),
		connect.WithInterceptors(headers{token: t.token, mode: mode, warnTo: warnTo}),
	}
	c.options = opts
	c.packages = pmv1connect.NewPackageServiceClient(hc, base, opts...)
	c.deployments = pmv1connect.NewDeploymentServiceClient(hc, base, opts...)
	c.clusters = pmv1connect.NewClusterServiceClient(hc, base, opts...)
	c.runtimes = pmv1connect.NewClassRuntimeServiceClient(hc, base, opts...)
	c.watches = pmv1connect.NewWatchServiceClient(hc, base, opts...)
	return c, nil
}

// headers puts the token and the field-validation mode on every request
// and prints the server's Warning headers.
type headers struct {
	token, mode string
	warnTo      io.Writer
}

var userAgent = "pmctl/" + version.String()

func (h headers) set(hd http.Header) {
	if h.token != "" {
		hd.Set("Authorization", "Bearer "+h.token)
	}
	hd.Set("Field-Validation", h.mode)
	hd.Set("User-Agent", userAgent)
}

func (h headers) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		h.set(req.Header())
		res, err := next(ctx, req)
		var hd http.Header
		var ce *connect.Error
		switch {
		case err == nil:
			hd = res.Header()
		case errors.As(err, &ce):
			hd = ce.Meta()
		}
		printWarnings(h.warnTo, hd.Values("Warning"))
		return res, err
	}
}

func (h headers) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		sc := next(ctx, spec)
		h.set(sc.RequestHeader())
		return sc
	}
}

func (h headers) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// printWarnings prints Warning headers (`299 - "text"`) as "warning: text".
func printWarnings(w io.Writer, values []string) {
	for _, v := range values {
		_, _ = fmt.Fprintf(w, "warning: %s\n", warningText(v))
	}
}

// warningText extracts the text of an RFC 7234 warning value.
func warningText(v string) string {
	i := strings.IndexByte(v, '"')
	j := strings.LastIndexByte(v, '"')
	if i < 0 || j <= i {
		return v
	}
	return strings.NewReplacer(`\"`, `"`, `\\`, `\`).Replace(v[i+1 : j])
}

// rawJSONCodec is Connect's JSON codec, except that a request message can
// be sent as JSON the user wrote (see withDocument): PM then applies its
// own field policy (unknown fields, aliases, enum names) to the user's
// document, exactly as for any other client, rather than to what pmctl's
// decoding kept of it.
type rawJSONCodec struct {
	bodies sync.Map // proto.Message → []byte
}

func (*rawJSONCodec) Name() string { return "json" }

func (c *rawJSONCodec) Marshal(msg any) ([]byte, error) {
	if b, ok := c.bodies.Load(msg); ok {
		return b.([]byte), nil
	}
	pm, ok := msg.(proto.Message)
	if !ok {
		return nil, errors.New("not a protobuf message")
	}
	return protojson.MarshalOptions{UseProtoNames: true}.Marshal(pm)
}

func (*rawJSONCodec) Unmarshal(data []byte, msg any) error {
	pm, ok := msg.(proto.Message)
	if !ok {
		return errors.New("not a protobuf message")
	}
	// A newer PM may answer with fields this pmctl does not know.
	return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, pm)
}

// withDocument makes req go out with doc, a JSON object, as its field
// (e.g. "package"), instead of req's own value of it. The returned function
// forgets the body; call it when the request is done.
func (c *conn) withDocument(req proto.Message, field string, doc []byte) (func(), error) {
	head, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(req)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(head, &m); err != nil {
		return nil, err
	}
	m[field] = doc
	body, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	c.codec.bodies.Store(req, body)
	return func() { c.codec.bodies.Delete(req) }, nil
}
