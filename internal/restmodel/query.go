package restmodel

import (
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// QueryAliases are older names of query parameters: OaaS tools send
// ?env= where PM's API says ?cluster=.
var QueryAliases = map[string]string{"env": "cluster"}

// Unknown is QueryField's reason for a name the request does not have.
const Unknown = "unknown"

// QueryField resolves a dotted query parameter name (JSON or proto names)
// to the scalar field it sets. why is Unknown for a name the request does
// not have, or says why a known field cannot be set from the query (it is
// the body's, or structured).
func (r *Route) QueryField(name string) (fd protoreflect.FieldDescriptor, why string) {
	md := r.Method.Input()
	parts := strings.Split(name, ".")
	for i, part := range parts {
		fd = md.Fields().ByJSONName(part)
		if fd == nil {
			fd = md.Fields().ByName(protoreflect.Name(part))
		}
		if fd == nil {
			return nil, Unknown
		}
		if i == 0 && (r.Body == "*" || string(fd.Name()) == r.Body) {
			return nil, "is a field of the request body; set it there"
		}
		if i == len(parts)-1 {
			break
		}
		if fd.Message() == nil || fd.IsList() || fd.IsMap() {
			return nil, Unknown
		}
		md = fd.Message()
	}
	if fd.IsMap() || (fd.Message() != nil && !isWellKnown(fd.Message())) {
		return nil, "names a structured field, which the query cannot set"
	}
	return fd, ""
}

// QueryParam is one query parameter a route takes.
type QueryParam struct {
	// Name is the proto (snake_case) name, dotted for nested fields.
	Name  string
	Field protoreflect.FieldDescriptor
}

// QueryParams lists the parameters a route takes: the request's scalar
// fields that neither the path nor the body sets, nested messages' fields
// by dotted name.
func (r *Route) QueryParams() []QueryParam {
	path := map[string]bool{}
	for _, f := range r.PathFields() {
		path[f] = true
	}
	if r.Body == "*" {
		return nil
	}
	var out []QueryParam
	var walk func(md protoreflect.MessageDescriptor, prefix string, depth int)
	walk = func(md protoreflect.MessageDescriptor, prefix string, depth int) {
		for i := range md.Fields().Len() {
			fd := md.Fields().Get(i)
			name := prefix + string(fd.Name())
			if depth == 0 && (path[string(fd.Name())] || string(fd.Name()) == r.Body) {
				continue
			}
			switch {
			case fd.IsMap():
			case fd.Message() != nil && !isWellKnown(fd.Message()):
				if !fd.IsList() && depth < 3 {
					walk(fd.Message(), name+".", depth+1)
				}
			default:
				out = append(out, QueryParam{Name: name, Field: fd})
			}
		}
	}
	walk(r.Method.Input(), "", 0)
	return out
}

func isWellKnown(md protoreflect.MessageDescriptor) bool {
	return strings.HasPrefix(string(md.FullName()), "google.protobuf.")
}

// CheckScalar says what is wrong with v as a query value of fd ("" if
// nothing).
func CheckScalar(fd protoreflect.FieldDescriptor, v string) string {
	bad := func(what string) string { return fmt.Sprintf("%q is not %s", v, what) }
	switch fd.Kind() {
	case protoreflect.BoolKind:
		if _, err := strconv.ParseBool(v); err != nil {
			return bad("true or false")
		}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		if _, err := strconv.ParseInt(v, 10, 32); err != nil {
			return bad("an integer")
		}
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		if _, err := strconv.ParseInt(v, 10, 64); err != nil {
			return bad("an integer")
		}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		if _, err := strconv.ParseUint(v, 10, 32); err != nil {
			return bad("a non-negative integer")
		}
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if _, err := strconv.ParseUint(v, 10, 64); err != nil {
			return bad("a non-negative integer")
		}
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		if _, err := strconv.ParseFloat(v, 64); err != nil {
			return bad("a number")
		}
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		if vals.ByName(protoreflect.Name(v)) != nil {
			return ""
		}
		if n, err := strconv.ParseInt(v, 10, 32); err == nil && vals.ByNumber(protoreflect.EnumNumber(n)) != nil {
			return ""
		}
		names := make([]string, vals.Len())
		for i := range names {
			names[i] = string(vals.Get(i).Name())
		}
		return bad("one of " + strings.Join(names, ", "))
	}
	return ""
}
