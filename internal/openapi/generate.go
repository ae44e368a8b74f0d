// Package openapi describes PM's REST face as an OpenAPI 3 document, built
// from the protos' google.api.http bindings and the REST conventions of
// internal/restmodel (snake_case names, enum strings, bare arrays for list
// routes, 201 for creates, 204 for deletes, {"error": "..."} bodies), so
// that the document says what the server does rather than what a generic
// transcoding would do. cmd/protoc-gen-pm-openapi runs it as a buf plugin
// and writes gen/openapi.
//
// It depends on descriptors only, never on generated code, so it runs while
// gen/ is being regenerated.
package openapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/oaas/pm/internal/restmodel"
)

// Comments returns the leading comment of a descriptor ("" when none);
// protogen supplies them from source info.
type Comments func(protoreflect.Descriptor) string

// Info names the document.
type Info struct {
	Title, Version, Description string
}

// Build returns the document for services.
func Build(services []protoreflect.ServiceDescriptor, comments Comments, info Info) (*openapi3.T, error) {
	routes, err := restmodel.RoutesOf(services)
	if err != nil {
		return nil, err
	}
	g := &gen{
		comments: comments,
		doc: &openapi3.T{
			OpenAPI: "3.0.3",
			Info:    &openapi3.Info{Title: info.Title, Version: info.Version, Description: info.Description},
			Paths:   openapi3.NewPaths(),
			Components: &openapi3.Components{
				Schemas:    openapi3.Schemas{},
				Responses:  openapi3.ResponseBodies{},
				Parameters: openapi3.ParametersMap{},
				Headers:    openapi3.Headers{},
				SecuritySchemes: openapi3.SecuritySchemes{
					"bearer": &openapi3.SecuritySchemeRef{Value: openapi3.NewJWTSecurityScheme().
						WithDescription("An API token or an OIDC JWT: `Authorization: Bearer TOKEN` (when authentication is on).")},
				},
			},
			Security: openapi3.SecurityRequirements{{"bearer": []string{}}},
		},
		opIDs: map[string]int{},
	}
	g.commonComponents()
	for i := range routes {
		g.route(&routes[i])
	}
	g.probes()
	tags := map[string]bool{}
	for _, sd := range services {
		name := string(sd.Name())
		if !tags[name] {
			tags[name] = true
			g.doc.Tags = append(g.doc.Tags, &openapi3.Tag{Name: name, Description: comments(sd)})
		}
	}
	return g.doc, nil
}

// Marshal renders the document as indented JSON with sorted keys, so that
// regenerating it gives the same bytes.
func Marshal(doc *openapi3.T) ([]byte, error) {
	raw, err := doc.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

type gen struct {
	doc      *openapi3.T
	comments Comments
	opIDs    map[string]int
}

const errorSchema = "Error"

func ref(kind, name string) string { return "#/components/" + kind + "/" + name }

func (g *gen) commonComponents() {
	c := g.doc.Components
	c.Schemas[errorSchema] = openapi3.NewSchemaRef("", &openapi3.Schema{
		Type:        &openapi3.Types{openapi3.TypeObject},
		Description: "Every error: what is wrong, naming the field or object. Never a driver message or a Go type name.",
		Required:    []string{"error"},
		Properties:  openapi3.Schemas{"error": openapi3.NewSchemaRef("", openapi3.NewStringSchema())},
	})
	for status, desc := range map[int]string{
		400: "Bad input: malformed body, failed validation, unknown field (strict mode), unknown enum name, a query parameter conflicting with the path.",
		401: "No or a bad credential (authentication on). Comes with WWW-Authenticate: Bearer.",
		403: "The caller's role may not do this; the message names the role needed.",
		404: "The named object does not exist.",
		409: "It already exists, or the caller's revision (If-Match) is stale, or it is in use.",
		413: "The body exceeds SERVER_MAX_BODY_BYTES after decompression.",
		414: "The query string is too long.",
		415: "Writes take application/json or application/yaml only.",
		429: "A source that keeps failing authentication; see Retry-After.",
		503: "Storage or every needed cluster is unreachable; retry (with the same Idempotency-Key when the write may have happened).",
		504: "A deadline passed.",
	} {
		c.Responses[fmt.Sprint(status)] = &openapi3.ResponseRef{Value: openapi3.NewResponse().
			WithDescription(desc).WithJSONSchemaRef(openapi3.NewSchemaRef(ref("schemas", errorSchema), nil))}
	}
	c.Headers["Warning"] = &openapi3.HeaderRef{Value: &openapi3.Header{Parameter: openapi3.Parameter{
		Description: `One per unknown field or query parameter the request carried, e.g. 299 - "unknown field \"spec.foo\"".`,
		Schema:      openapi3.NewSchemaRef("", openapi3.NewStringSchema()),
	}}}
	c.Headers["ETag"] = &openapi3.HeaderRef{Value: &openapi3.Header{Parameter: openapi3.Parameter{
		Description: "The object's revision; send it back in If-Match for a conditional write.",
		Schema:      openapi3.NewSchemaRef("", openapi3.NewStringSchema()),
	}}}
	c.Headers["X-Next-Page-Token"] = &openapi3.HeaderRef{Value: &openapi3.Header{Parameter: openapi3.Parameter{
		Description: "Present when another page exists; pass it as page_token.",
		Schema:      openapi3.NewSchemaRef("", openapi3.NewStringSchema()),
	}}}
	c.Headers["X-Cluster-Errors"] = &openapi3.HeaderRef{Value: &openapi3.Header{Parameter: openapi3.Parameter{
		Description: "Clusters that did not answer a fan-out: \"name: reason; ...\".",
		Schema:      openapi3.NewSchemaRef("", openapi3.NewStringSchema()),
	}}}
	c.Parameters["field_validation"] = &openapi3.ParameterRef{Value: openapi3.NewQueryParameter("field_validation").
		WithDescription("Unknown-field policy of this request: Warn (default: accepted, reported in Warning headers), Strict (400 naming them) or Ignore.").
		WithSchema(openapi3.NewStringSchema().WithEnum("Strict", "Warn", "Ignore"))}
	c.Parameters["Field-Validation"] = &openapi3.ParameterRef{Value: openapi3.NewHeaderParameter("Field-Validation").
		WithDescription("The same policy as a header; works on every protocol.").
		WithSchema(openapi3.NewStringSchema().WithEnum("Strict", "Warn", "Ignore"))}
	c.Parameters["Idempotency-Key"] = &openapi3.ParameterRef{Value: openapi3.NewHeaderParameter("Idempotency-Key").
		WithDescription("A retried request with the same key returns the first result; with a different body it is 409.").
		WithSchema(openapi3.NewStringSchema().WithMaxLength(255))}
	c.Parameters["If-Match"] = &openapi3.ParameterRef{Value: openapi3.NewHeaderParameter("If-Match").
		WithDescription("The revision (ETag) the caller last saw; a stale one is 409 and changes nothing.").
		WithSchema(openapi3.NewStringSchema())}
}

// route adds one REST binding.
func (g *gen) route(r *restmodel.Route) {
	md := r.Method
	op := openapi3.NewOperation()
	op.Tags = []string{string(md.Parent().Name())}
	op.Summary = firstSentence(g.comments(md))
	op.Description = g.comments(md)
	op.OperationID = g.opID(string(md.Parent().Name()) + "_" + string(md.Name()))
	mutating := !isNoSideEffects(md)

	for _, f := range r.PathFields() {
		fd := md.Input().Fields().ByName(protoreflect.Name(f))
		p := openapi3.NewPathParameter(f).WithSchema(g.scalar(fd).Value)
		p.Description = g.comments(fd)
		op.AddParameter(p)
	}
	for _, qp := range r.QueryParams() {
		if qp.Field.Name() == "idempotency_key" || qp.Field.Name() == "expected_revision" {
			continue // sent as headers (Idempotency-Key, If-Match)
		}
		schema := g.scalar(qp.Field)
		if qp.Field.IsList() {
			schema = openapi3.NewSchemaRef("", openapi3.NewArraySchema().WithItems(schema.Value))
		}
		p := openapi3.NewQueryParameter(qp.Name).WithSchema(schema.Value)
		p.Description = g.comments(qp.Field)
		if qp.Field.IsList() {
			explode := true
			p.Style, p.Explode = openapi3.SerializationForm, &explode
		}
		op.AddParameter(p)
		for alias, name := range restmodel.QueryAliases {
			if name == qp.Name {
				ap := openapi3.NewQueryParameter(alias).WithSchema(schema.Value)
				ap.Description = "Older name of " + name + "."
				op.AddParameter(ap)
			}
		}
	}
	op.Parameters = append(op.Parameters,
		&openapi3.ParameterRef{Ref: ref("parameters", "field_validation")},
		&openapi3.ParameterRef{Ref: ref("parameters", "Field-Validation")})
	_, watchable := restmodel.WatchOf[md.FullName()]
	if watchable {
		op.AddParameter(openapi3.NewQueryParameter(restmodel.WatchParam).WithSchema(openapi3.NewBoolSchema()).
			WithDescription("true: stream changes as Server-Sent Events (Accept: text/event-stream) instead of one page: " +
				"a snapshot, then added/changed/deleted events whose id is the cursor; Last-Event-ID (or resume_from) resumes. " +
				"With watch, only key, resume_from and heartbeat_seconds apply."))
		op.AddParameter(openapi3.NewQueryParameter("resume_from").WithSchema(openapi3.NewStringSchema()).
			WithDescription("With watch: the cursor of the last event seen."))
		op.AddParameter(openapi3.NewHeaderParameter("Last-Event-ID").WithSchema(openapi3.NewStringSchema()).
			WithDescription("With watch: the cursor to resume after (what browsers send on reconnect)."))
	}
	in := md.Input().Fields()
	if in.ByName("idempotency_key") != nil || (mutating && strings.HasPrefix(string(md.Name()), "Update")) {
		op.Parameters = append(op.Parameters, &openapi3.ParameterRef{Ref: ref("parameters", "Idempotency-Key")})
	}
	if in.ByName("expected_revision") != nil {
		op.Parameters = append(op.Parameters, &openapi3.ParameterRef{Ref: ref("parameters", "If-Match")})
	}

	if r.BodyDesc != nil {
		schema := g.message(r.BodyDesc)
		op.RequestBody = &openapi3.RequestBodyRef{Value: openapi3.NewRequestBody().WithRequired(true).
			WithDescription("JSON, or YAML with the same fields (scalars in string maps are taken as strings).").
			WithContent(openapi3.Content{
				"application/json": openapi3.NewMediaType().WithSchemaRef(schema),
				"application/yaml": openapi3.NewMediaType().WithSchemaRef(schema),
			})}
	}

	ok := openapi3.NewResponse().WithDescription("OK")
	ok.Headers = openapi3.Headers{"Warning": &openapi3.HeaderRef{Ref: ref("headers", "Warning")}}
	out := md.Output().Fields()
	if out.ByName("revision") != nil {
		ok.Headers["ETag"] = &openapi3.HeaderRef{Ref: ref("headers", "ETag")}
	}
	if out.ByName("next_page_token") != nil {
		ok.Headers["X-Next-Page-Token"] = &openapi3.HeaderRef{Ref: ref("headers", "X-Next-Page-Token")}
	}
	if out.ByName("cluster_errors") != nil {
		ok.Headers["X-Cluster-Errors"] = &openapi3.HeaderRef{Ref: ref("headers", "X-Cluster-Errors")}
	}
	status := r.SuccessStatus()
	if status != http.StatusNoContent {
		var body *openapi3.SchemaRef
		if f := r.ResponseField(); f != nil {
			body = g.fieldSchema(f)
		} else {
			body = g.message(md.Output())
		}
		ok.Content = openapi3.NewContentWithJSONSchemaRef(body)
		if watchable {
			sse := openapi3.NewStringSchema()
			sse.Description = "with watch=true: event: SNAPSHOT|SYNCED|ADDED|CHANGED|DELETED, id: the cursor, data: the object's REST JSON"
			ok.Content["text/event-stream"] = openapi3.NewMediaType().WithSchema(sse)
		}
	} else {
		ok.Description = ptr("Deleted")
	}
	op.Responses = openapi3.NewResponses()
	delete(op.Responses.Map(), "default")
	op.Responses.Set(fmt.Sprint(status), &openapi3.ResponseRef{Value: ok})
	if r.Creates() && in.ByName("dry_run") != nil {
		dry := *ok
		dry.Description = ptr("Nothing was created: a dry run (?dry_run=true) answers with the plan, and a create that " +
			"found the object and updated it (or left it unchanged) says so in the X-Write-Status header.")
		op.Responses.Set("200", &openapi3.ResponseRef{Value: &dry})
	}
	errs := []int{400, 401, 403, 429, 503, 504}
	if len(r.PathFields()) > 0 || r.Verb != http.MethodGet {
		errs = append(errs, 404)
	}
	if mutating {
		errs = append(errs, 409)
	}
	if r.BodyDesc != nil {
		errs = append(errs, 413, 415)
	}
	slices.Sort(errs)
	for _, s := range errs {
		op.Responses.Set(fmt.Sprint(s), &openapi3.ResponseRef{Ref: ref("responses", fmt.Sprint(s))})
	}
	g.doc.AddOperation(openAPIPath(r), r.Verb, op)
}

func ptr[T any](v T) *T { return &v }

// isNoSideEffects reads idempotency_level = NO_SIDE_EFFECTS reflectively:
// in a protoc plugin the options are descriptorpb messages.
func isNoSideEffects(md protoreflect.MethodDescriptor) bool {
	opts := md.Options().ProtoReflect()
	fd := opts.Descriptor().Fields().ByName("idempotency_level")
	return fd != nil && opts.Has(fd) && opts.Get(fd).Enum() == 1 // NO_SIDE_EFFECTS
}

// opID makes an operation id unique: additional bindings of one RPC get a
// numbered suffix.
func (g *gen) opID(base string) string {
	n := g.opIDs[base]
	g.opIDs[base] = n + 1
	if n == 0 {
		return base
	}
	return fmt.Sprintf("%s_%d", base, n+1)
}

func openAPIPath(r *restmodel.Route) string {
	parts := make([]string, len(r.Segments))
	for i, s := range r.Segments {
		if s.Field != "" {
			parts[i] = "{" + s.Field + "}"
		} else {
			parts[i] = s.Literal
		}
	}
	return "/" + strings.Join(parts, "/")
}

func firstSentence(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if i := strings.Index(s, ". "); i >= 0 {
		return s[:i+1]
	}
	return s
}

// probes adds the endpoints outside the RPCs.
func (g *gen) probes() {
	probe := func(path, desc string) {
		op := openapi3.NewOperation()
		op.Tags = []string{"Probes"}
		op.Summary = desc
		op.OperationID = g.opID("Probe_" + strings.Trim(path, "/"))
		op.Security = &openapi3.SecurityRequirements{}
		obj := openapi3.NewObjectSchema().WithProperty("status", openapi3.NewStringSchema()).
			WithProperty("timestamp", openapi3.NewDateTimeSchema())
		obj.AdditionalProperties = openapi3.AdditionalProperties{Has: ptr(true)}
		op.Responses = openapi3.NewResponses()
		delete(op.Responses.Map(), "default")
		op.Responses.Set("200", &openapi3.ResponseRef{Value: openapi3.NewResponse().WithDescription("OK").WithJSONSchema(obj)})
		if path != "/livez" {
			op.Responses.Set("503", &openapi3.ResponseRef{Value: openapi3.NewResponse().WithDescription("Not ready: storage unreachable or its schema not current.").WithJSONSchema(obj)})
		}
		g.doc.AddOperation(path, http.MethodGet, op)
	}
	g.doc.Tags = append(g.doc.Tags, &openapi3.Tag{Name: "Probes", Description: "Always open, also with authentication on."})
	probe("/livez", "The process answers.")
	probe("/readyz", "Storage is reachable and its schema is the one this build expects.")
	probe("/health", "Readiness in the shape OaaS tools read (status, service, version, timestamp, storage).")
}

// message returns a reference to msg's schema, adding it (and what it
// uses) to the components.
func (g *gen) message(md protoreflect.MessageDescriptor) *openapi3.SchemaRef {
	if wk := wellKnown(md); wk != nil {
		return openapi3.NewSchemaRef("", wk)
	}
	name := string(md.FullName())
	if _, done := g.doc.Components.Schemas[name]; !done {
		s := openapi3.NewObjectSchema()
		s.Description = g.comments(md)
		g.doc.Components.Schemas[name] = openapi3.NewSchemaRef("", s) // before recursing: messages may refer to themselves
		fields := md.Fields()
		props := openapi3.Schemas{}
		for i := range fields.Len() {
			fd := fields.Get(i)
			fs := g.fieldSchema(fd)
			if c := g.comments(fd); c != "" && fs.Ref == "" {
				fs.Value.Description = c
			}
			props[string(fd.Name())] = fs
		}
		s.Properties = props
	}
	return openapi3.NewSchemaRef(ref("schemas", name), nil)
}

// fieldSchema describes one field's JSON value as the REST face writes
// and reads it.
func (g *gen) fieldSchema(fd protoreflect.FieldDescriptor) *openapi3.SchemaRef {
	switch {
	case fd.IsMap():
		s := openapi3.NewObjectSchema()
		s.AdditionalProperties = openapi3.AdditionalProperties{Schema: g.single(fd.MapValue())}
		return openapi3.NewSchemaRef("", s)
	case fd.IsList():
		return openapi3.NewSchemaRef("", &openapi3.Schema{Type: &openapi3.Types{openapi3.TypeArray}, Items: g.single(fd)})
	}
	s := g.single(fd)
	if fd.HasPresence() && s.Ref == "" {
		// Optional scalars and messages may be absent or null on input.
		s.Value.Nullable = true
	}
	return s
}

func (g *gen) single(fd protoreflect.FieldDescriptor) *openapi3.SchemaRef {
	if fd.Message() != nil {
		return g.message(fd.Message())
	}
	return g.scalar(fd)
}

func (g *gen) scalar(fd protoreflect.FieldDescriptor) *openapi3.SchemaRef {
	var s *openapi3.Schema
	switch fd.Kind() {
	case protoreflect.BoolKind:
		s = openapi3.NewBoolSchema()
	case protoreflect.StringKind:
		s = openapi3.NewStringSchema()
	case protoreflect.BytesKind:
		s = openapi3.NewBytesSchema()
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		s = openapi3.NewInt32Schema()
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		s = openapi3.NewInt64Schema().WithMin(0)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind,
		protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		// protojson writes 64-bit integers as strings.
		s = openapi3.NewStringSchema()
		s.Format, s.Pattern = "int64", `^-?[0-9]+$`
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		s = openapi3.NewFloat64Schema()
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		names := make([]any, vals.Len())
		for i := range names {
			names[i] = string(vals.Get(i).Name())
		}
		s = openapi3.NewStringSchema().WithEnum(names...)
		s.Description = g.comments(fd.Enum())
	default:
		s = &openapi3.Schema{}
	}
	return openapi3.NewSchemaRef("", s)
}

// wellKnown is the JSON form of the google.protobuf types PM uses.
func wellKnown(md protoreflect.MessageDescriptor) *openapi3.Schema {
	switch md.FullName() {
	case "google.protobuf.Timestamp":
		return openapi3.NewDateTimeSchema()
	case "google.protobuf.Duration":
		return openapi3.NewStringSchema()
	case "google.protobuf.Struct":
		return openapi3.NewObjectSchema()
	case "google.protobuf.Value":
		return &openapi3.Schema{}
	case "google.protobuf.Empty":
		return openapi3.NewObjectSchema()
	}
	if strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		return &openapi3.Schema{}
	}
	return nil
}
