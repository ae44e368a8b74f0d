// Package restmodel holds the conventions of PM's REST face in one place:
// the routes the protos' google.api.http bindings declare, which query
// parameters each route takes, and the statuses it answers with. The
// server enforces them and the OpenAPI generator describes them, so the
// document cannot drift from what is served.
//
// It depends on descriptors only (no generated code), so the protoc plugin
// that writes the OpenAPI document builds before gen/ exists.
package restmodel

import (
	"fmt"
	"net/http"
	"strings"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Route is one google.api.http binding of an RPC.
type Route struct {
	// Verb is the HTTP method, Template the path template as written
	// (/api/v1/packages/{name}).
	Verb, Template string
	Segments       []Segment
	Method         protoreflect.MethodDescriptor
	// Body is the request field the body fills: "" for none, "*" for the
	// whole request.
	Body string
	// BodyDesc is the message the body holds (nil without a body).
	BodyDesc protoreflect.MessageDescriptor
	// ResponseBody is the response field the REST body carries ("" for the
	// whole response).
	ResponseBody string
}

// Segment is a literal path segment, or (Field set) one that binds a field.
type Segment struct {
	Literal string
	Field   string
}

// Table is the REST route table of a set of services.
type Table []Route

// RoutesOf returns the routes of services, in declaration order.
func RoutesOf(services []protoreflect.ServiceDescriptor) (Table, error) {
	var rs Table
	for _, sd := range services {
		for i := range sd.Methods().Len() {
			md := sd.Methods().Get(i)
			rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
			if rule == nil {
				continue
			}
			for _, r := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
				rt, err := newRoute(md, r)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", md.FullName(), err)
				}
				rs = append(rs, rt)
			}
		}
	}
	return rs, nil
}

// Services looks services up by full name in the global registry, where
// generated code registers them.
func Services(names []string) ([]protoreflect.ServiceDescriptor, error) {
	out := make([]protoreflect.ServiceDescriptor, 0, len(names))
	for _, name := range names {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", name, err)
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			return nil, fmt.Errorf("%s is not a service", name)
		}
		out = append(out, sd)
	}
	return out, nil
}

func newRoute(md protoreflect.MethodDescriptor, r *annotations.HttpRule) (Route, error) {
	var verb, tmpl string
	switch p := r.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		verb, tmpl = http.MethodGet, p.Get
	case *annotations.HttpRule_Post:
		verb, tmpl = http.MethodPost, p.Post
	case *annotations.HttpRule_Put:
		verb, tmpl = http.MethodPut, p.Put
	case *annotations.HttpRule_Delete:
		verb, tmpl = http.MethodDelete, p.Delete
	case *annotations.HttpRule_Patch:
		verb, tmpl = http.MethodPatch, p.Patch
	default:
		return Route{}, fmt.Errorf("unsupported HTTP pattern %v", r.GetPattern())
	}
	rt := Route{Verb: verb, Template: tmpl, Method: md, Body: r.GetBody(), ResponseBody: r.GetResponseBody()}
	for _, s := range strings.Split(strings.TrimPrefix(tmpl, "/"), "/") {
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
			field, pattern, _ := strings.Cut(s[1:len(s)-1], "=")
			if pattern != "" && pattern != "*" {
				return Route{}, fmt.Errorf("path template %q: only {field} and {field=*} are supported", tmpl)
			}
			if md.Input().Fields().ByName(protoreflect.Name(field)) == nil {
				return Route{}, fmt.Errorf("path template %q names %q, which %s does not have", tmpl, field, md.Input().FullName())
			}
			rt.Segments = append(rt.Segments, Segment{Field: field})
			continue
		}
		rt.Segments = append(rt.Segments, Segment{Literal: s})
	}
	switch rt.Body {
	case "":
	case "*":
		rt.BodyDesc = md.Input()
	default:
		fd := md.Input().Fields().ByName(protoreflect.Name(rt.Body))
		if fd == nil || fd.Message() == nil {
			return Route{}, fmt.Errorf("body field %q is not a message field of %s", rt.Body, md.Input().FullName())
		}
		rt.BodyDesc = fd.Message()
	}
	if rt.ResponseBody != "" && md.Output().Fields().ByName(protoreflect.Name(rt.ResponseBody)) == nil {
		return Route{}, fmt.Errorf("response body field %q is not a field of %s", rt.ResponseBody, md.Output().FullName())
	}
	return rt, nil
}

// Match finds the route of method and path (unescaped) and the values of
// its path fields; nil when none matches.
func (t Table) Match(method, path string) (*Route, map[string]string) {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for i := range t {
		r := &t[i]
		if r.Verb != method || len(r.Segments) != len(parts) {
			continue
		}
		var vars map[string]string
		ok := true
		for j, s := range r.Segments {
			switch {
			case s.Field != "":
				if parts[j] == "" {
					ok = false
				}
				if vars == nil {
					vars = map[string]string{}
				}
				vars[s.Field] = parts[j]
			case s.Literal != parts[j]:
				ok = false
			}
			if !ok {
				break
			}
		}
		if ok {
			return r, vars
		}
	}
	return nil, nil
}

// PathFields are the request fields the path binds, in path order.
func (r *Route) PathFields() []string {
	var out []string
	for _, s := range r.Segments {
		if s.Field != "" {
			out = append(out, s.Field)
		}
	}
	return out
}

// Creates reports whether a success is 201 Created (a POST of a Create
// RPC; a dry run of one answers 200).
func (r *Route) Creates() bool {
	return r.Verb == http.MethodPost && strings.HasPrefix(string(r.Method.Name()), "Create")
}

// WriteStatusHeader is set by a create RPC that created nothing (an
// existing deployment updated, or left unchanged): "updated" or
// "unchanged". REST then answers 200, not 201.
const WriteStatusHeader = "X-Write-Status"

// SuccessStatus is the status of a successful call: 201 for a create
// (200 when WriteStatusHeader or a dry run says nothing was created), 204
// for a delete whose answer carries nothing, 200 otherwise (a delete that
// says what it removed, as OaaS deletes of deployments do, included).
func (r *Route) SuccessStatus() int {
	switch {
	case r.Creates():
		return http.StatusCreated
	case r.Verb == http.MethodDelete && r.EmptyResponse():
		return http.StatusNoContent
	}
	return http.StatusOK
}

// EmptyResponse reports whether the REST body has nothing to carry: the
// message it would hold (the response_body field's, or the whole
// response) has no fields.
func (r *Route) EmptyResponse() bool {
	md := r.Method.Output()
	if f := r.ResponseField(); f != nil {
		if f.Message() == nil || f.IsList() || f.IsMap() {
			return false
		}
		md = f.Message()
	}
	return md.Fields().Len() == 0
}

// ResponseField is the response field the REST body carries (a repeated
// one is a bare JSON array); nil when the body is the whole response.
func (r *Route) ResponseField() protoreflect.FieldDescriptor {
	if r.ResponseBody == "" {
		return nil
	}
	return r.Method.Output().Fields().ByName(protoreflect.Name(r.ResponseBody))
}

// Streaming returns the procedure paths ("/pkg.Service/Method") of the
// streaming RPCs of services.
func Streaming(services []protoreflect.ServiceDescriptor) map[string]bool {
	out := map[string]bool{}
	for _, sd := range services {
		for i := range sd.Methods().Len() {
			md := sd.Methods().Get(i)
			if md.IsStreamingClient() || md.IsStreamingServer() {
				out["/"+string(sd.FullName())+"/"+string(md.Name())] = true
			}
		}
	}
	return out
}
