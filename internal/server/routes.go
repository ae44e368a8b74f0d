package server

import (
	"fmt"
	"net/http"
	"strings"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// route is one google.api.http binding of an RPC, as the REST pipeline
// needs it before the transcoder runs: which message the body is, which
// fields the path names, and so which query parameters mean something.
type route struct {
	verb     string
	segments []segment
	method   protoreflect.MethodDescriptor
	// body is the request field the body fills: "" for none, "*" for the
	// whole request.
	body string
	// bodyDesc is the message the body holds (nil without a body).
	bodyDesc protoreflect.MessageDescriptor
}

// segment is a literal path segment, or (field set) one that binds a field.
type segment struct {
	literal string
	field   string
}

// routes is the REST route table of every mounted service.
type routes []route

// buildRoutes reads the HTTP bindings of services (full names) from the
// global registry, where the generated code registered them.
func buildRoutes(services []string) (routes, error) {
	var rs routes
	for _, name := range services {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", name, err)
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			return nil, fmt.Errorf("%s is not a service", name)
		}
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

func newRoute(md protoreflect.MethodDescriptor, r *annotations.HttpRule) (route, error) {
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
		return route{}, fmt.Errorf("unsupported HTTP pattern %v", r.GetPattern())
	}
	rt := route{verb: verb, method: md, body: r.GetBody()}
	for _, s := range strings.Split(strings.TrimPrefix(tmpl, "/"), "/") {
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
			field, pattern, _ := strings.Cut(s[1:len(s)-1], "=")
			if pattern != "" && pattern != "*" {
				return route{}, fmt.Errorf("path template %q: only {field} and {field=*} are supported", tmpl)
			}
			rt.segments = append(rt.segments, segment{field: field})
			continue
		}
		rt.segments = append(rt.segments, segment{literal: s})
	}
	switch rt.body {
	case "":
	case "*":
		rt.bodyDesc = md.Input()
	default:
		fd := md.Input().Fields().ByName(protoreflect.Name(rt.body))
		if fd == nil || fd.Message() == nil {
			return route{}, fmt.Errorf("body field %q is not a message field of %s", rt.body, md.Input().FullName())
		}
		rt.bodyDesc = fd.Message()
	}
	return rt, nil
}

// match finds the route of method and path (unescaped) and the values of
// its path fields; nil when none matches (the transcoder then answers 404
// or 405).
func (rs routes) match(method, path string) (rt *route, vars map[string]string) {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for i := range rs {
		r := &rs[i]
		if r.verb != method || len(r.segments) != len(parts) {
			continue
		}
		vars = nil
		ok := true
		for j, s := range r.segments {
			switch {
			case s.field != "":
				if parts[j] == "" {
					ok = false
				}
				if vars == nil {
					vars = map[string]string{}
				}
				vars[s.field] = parts[j]
			case s.literal != parts[j]:
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

// streaming returns the procedure paths ("/pkg.Service/Method") of the
// streaming RPCs of services: they run as long as the client listens, so the
// per-request timeout does not apply to them.
func streaming(services []string) map[string]bool {
	out := map[string]bool{}
	for _, name := range services {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			continue
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			continue
		}
		for i := range sd.Methods().Len() {
			md := sd.Methods().Get(i)
			if md.IsStreamingClient() || md.IsStreamingServer() {
				out["/"+string(sd.FullName())+"/"+string(md.Name())] = true
			}
		}
	}
	return out
}
