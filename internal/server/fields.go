package server

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/fieldcheck"
)

// Fields applies the field policy to Connect, gRPC and gRPC-Web requests,
// as the REST face does to REST bodies. Its codecs replace connect's "json"
// and "proto" codecs: they never fail a decode themselves (connect would
// wrap the failure in text naming Go types), but note what they found for
// the request message, and the interceptor, which runs before the handler,
// turns the notes into a clean InvalidArgument or Warning headers.
type Fields struct {
	aliases fieldcheck.Aliases
	// notes holds what a codec found about a message until the interceptor
	// takes it; keyed by the message pointer the handler receives.
	notes sync.Map
}

// NewFields returns the Connect-side field policy with the given aliases.
func NewFields(aliases fieldcheck.Aliases) *Fields { return &Fields{aliases: aliases} }

// note is what decoding found about one request message.
type note struct {
	unknown []string
	err     error
}

// HandlerOptions are the connect options that install the policy: codecs
// and the interceptor. maxBytes bounds each message after decompression.
func (f *Fields) HandlerOptions(maxBytes int64) []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithCodec(&jsonCodec{f: f, name: "json"}),
		connect.WithCodec(&jsonCodec{f: f, name: "json; charset=utf-8"}),
		connect.WithCodec(&protoCodec{f: f}),
		connect.WithReadMaxBytes(int(maxBytes)),
	}
}

// Interceptor checks each request message against the policy before the
// handler sees it.
func (f *Fields) Interceptor() connect.Interceptor { return fieldsInterceptor{f} }

func (f *Fields) put(msg any, n note) { f.notes.Store(msg, n) }

// restChecked marks the context of a REST request whose query and body the
// REST face already held to the policy: the message the transcoder hands
// the handler was built from that JSON, so walking it again finds nothing.
type restChecked struct{}

// check applies the policy to a received message and returns the warnings
// to send back.
func (f *Fields) check(ctx context.Context, msg any, header func(string) string) ([]string, error) {
	var n note
	if v, ok := f.notes.LoadAndDelete(msg); ok {
		n = v.(note)
	}
	if n.err != nil {
		return nil, n.err
	}
	if ctx.Value(restChecked{}) != nil {
		return nil, nil
	}
	pm, ok := msg.(proto.Message)
	if !ok {
		return nil, nil
	}
	unknown := n.unknown
	if unknown == nil {
		unknown = fieldcheck.Unknown(pm.ProtoReflect()) // binary: by field number
	}
	if err := fieldcheck.CheckEnums(pm.ProtoReflect()); err != nil {
		return nil, fault.Invalidf("%s", err.Error())
	}
	mode, err := parseFieldMode(header(FieldValidationHeader))
	if err != nil {
		return nil, fault.Invalidf("%s: %v", FieldValidationHeader, err)
	}
	if len(unknown) == 0 || mode == ignoreUnknown {
		return nil, nil
	}
	warnings := make([]string, len(unknown))
	for i, p := range unknown {
		warnings[i] = "unknown field " + strconv.QuoteToASCII(p)
	}
	if mode == strictUnknown {
		return nil, fault.Invalidf("%s (strict field validation)", strings.Join(warnings, "; "))
	}
	return warnings, nil
}

type fieldsInterceptor struct{ f *Fields }

func (i fieldsInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		warnings, err := i.f.check(ctx, req.Any(), req.Header().Get)
		if err != nil {
			return nil, err
		}
		res, err := next(ctx, req)
		if len(warnings) > 0 {
			var ce *connect.Error
			switch {
			case err == nil:
				addWarnings(res.Header(), warnings)
			case errors.As(err, &ce):
				addWarnings(ce.Meta(), warnings)
			}
		}
		return res, err
	}
}

func (i fieldsInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i fieldsInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return next(ctx, &checkedConn{StreamingHandlerConn: conn, f: i.f, ctx: ctx})
	}
}

// checkedConn applies the policy to each received message of a stream;
// warnings go out with the response headers, before the first message.
type checkedConn struct {
	connect.StreamingHandlerConn
	f    *Fields
	ctx  context.Context
	sent bool
}

func (c *checkedConn) Receive(msg any) error {
	if err := c.StreamingHandlerConn.Receive(msg); err != nil {
		c.f.notes.Delete(msg)
		return err
	}
	warnings, err := c.f.check(c.ctx, msg, c.RequestHeader().Get)
	if err != nil {
		return err
	}
	if !c.sent {
		addWarnings(c.ResponseHeader(), warnings)
	}
	return nil
}

func (c *checkedConn) Send(msg any) error {
	c.sent = true
	return c.StreamingHandlerConn.Send(msg)
}

// jsonCodec is connect's JSON codec with the field policy of the REST face.
type jsonCodec struct {
	f    *Fields
	name string
}

func (c *jsonCodec) Name() string { return c.name }

func (c *jsonCodec) Marshal(msg any) ([]byte, error) {
	pm, ok := msg.(proto.Message)
	if !ok {
		return nil, errors.New("not a protobuf message")
	}
	return protojson.Marshal(pm)
}

func (c *jsonCodec) Unmarshal(data []byte, msg any) error {
	pm, ok := msg.(proto.Message)
	if !ok {
		return errors.New("not a protobuf message")
	}
	if len(data) == 0 {
		c.f.put(msg, note{err: fault.Invalidf("request body is empty: send a JSON object")})
		return nil
	}
	res, err := fieldcheck.CheckJSON(pm.ProtoReflect().Descriptor(), data, fieldcheck.Options{Aliases: c.f.aliases})
	if err != nil {
		c.f.put(msg, note{err: fault.Invalidf("%s", err.Error())})
		return nil
	}
	if err := protojson.Unmarshal(res.JSON, pm); err != nil {
		c.f.put(msg, note{err: fault.Invalidf("invalid JSON body: %s", cleanDecodeError(err.Error()))})
		return nil
	}
	// An empty, non-nil list tells check that the JSON walk found nothing,
	// so it does not look for binary unknown fields.
	unknown := res.Unknown
	if unknown == nil {
		unknown = []string{}
	}
	c.f.put(msg, note{unknown: unknown})
	return nil
}

func (c *jsonCodec) IsBinary() bool { return false }

// protoCodec is connect's binary codec, with decode failures reported
// cleanly.
type protoCodec struct{ f *Fields }

func (c *protoCodec) Name() string { return "proto" }

func (c *protoCodec) Marshal(msg any) ([]byte, error) {
	pm, ok := msg.(proto.Message)
	if !ok {
		return nil, errors.New("not a protobuf message")
	}
	return proto.Marshal(pm)
}

func (c *protoCodec) MarshalAppend(dst []byte, msg any) ([]byte, error) {
	pm, ok := msg.(proto.Message)
	if !ok {
		return nil, errors.New("not a protobuf message")
	}
	return proto.MarshalOptions{}.MarshalAppend(dst, pm)
}

func (c *protoCodec) Unmarshal(data []byte, msg any) error {
	pm, ok := msg.(proto.Message)
	if !ok {
		return errors.New("not a protobuf message")
	}
	if err := proto.Unmarshal(data, pm); err != nil {
		c.f.put(msg, note{err: fault.Invalidf("invalid protobuf message: %s", cleanDecodeError(err.Error()))})
	}
	return nil
}

func (c *protoCodec) IsBinary() bool { return true }
