package server

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// FieldValidationParam and FieldValidationHeader let a client choose the
// unknown-field policy of one request (Strict, Warn or Ignore); the query
// parameter is REST's, the header works on every protocol.
const (
	FieldValidationParam  = "field_validation"
	FieldValidationHeader = "Field-Validation"
)

// fieldMode is the unknown-field policy of a request.
type fieldMode int

const (
	// warnUnknown accepts unknown fields and reports each in a Warning
	// header (the default: OaaS tools send fields of newer generations).
	warnUnknown fieldMode = iota
	// strictUnknown rejects a request with unknown fields, naming them all.
	strictUnknown
	// ignoreUnknown accepts them silently.
	ignoreUnknown
)

// parseFieldMode reads a Field-Validation value; "" is the default.
func parseFieldMode(v string) (fieldMode, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", "warn":
		return warnUnknown, nil
	case "strict":
		return strictUnknown, nil
	case "ignore":
		return ignoreUnknown, nil
	}
	return 0, fmt.Errorf("field validation %q is not one of Strict, Warn, Ignore", v)
}

// nonEmptyParams are selectors whose empty value would silently widen a
// request (an empty ?cluster= would mean "every cluster"): they must be
// left out rather than sent empty.
var nonEmptyParams = map[string]bool{"cluster": true, "env": true}

// checkQuery applies the policy to a REST request's query parameters: the
// path names the object, so a parameter naming a path field must agree with
// it (it is then dropped) and one naming the body is refused; unknown
// parameters are dropped and returned for the caller's policy; known ones
// must hold values of their field's type, once for a singular field. It
// returns the parameters to pass on, the unknown names and the problems.
func (rt *route) checkQuery(q url.Values, vars map[string]string) (url.Values, []string, []string) {
	var unknown, problems []string
	pass := url.Values{}
	names := make([]string, 0, len(q))
	for name := range q {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		values := q[name]
		head, _, _ := strings.Cut(name, ".")
		if v, ok := pathVar(rt, vars, head); ok {
			for _, qv := range values {
				if qv != v || head != name {
					problems = append(problems, fmt.Sprintf("query parameter %q conflicts with the path, which names %q; the path names the object", name, v))
					break
				}
			}
			continue
		}
		fd, why := rt.queryField(name)
		switch {
		case why == "unknown":
			unknown = append(unknown, name)
			continue
		case why != "":
			problems = append(problems, fmt.Sprintf("query parameter %q %s", name, why))
			continue
		}
		if !fd.IsList() && len(values) > 1 {
			problems = append(problems, fmt.Sprintf("query parameter %q is given %d times; it takes one value", name, len(values)))
			continue
		}
		ok := true
		for _, v := range values {
			if msg := checkScalar(fd, v); msg != "" {
				problems = append(problems, fmt.Sprintf("query parameter %q: %s", name, msg))
				ok = false
				break
			}
			if v == "" && nonEmptyParams[name] {
				problems = append(problems, fmt.Sprintf("query parameter %q is empty; leave it out to mean all", name))
				ok = false
				break
			}
		}
		if ok {
			pass[name] = values
		}
	}
	return pass, unknown, problems
}

// pathVar reports whether name (a JSON or proto name) is a field the path
// binds, and the path's value for it.
func pathVar(rt *route, vars map[string]string, name string) (string, bool) {
	for field, v := range vars {
		if field == name {
			return v, true
		}
		if fd := rt.method.Input().Fields().ByName(protoreflect.Name(field)); fd != nil && fd.JSONName() == name {
			return v, true
		}
	}
	return "", false
}

// queryField resolves a dotted parameter name to the scalar field it sets.
// why is "unknown" for a name the request does not have, or says why a
// known field cannot be set from the query.
func (rt *route) queryField(name string) (fd protoreflect.FieldDescriptor, why string) {
	md := rt.method.Input()
	parts := strings.Split(name, ".")
	for i, part := range parts {
		fd = md.Fields().ByJSONName(part)
		if fd == nil {
			fd = md.Fields().ByName(protoreflect.Name(part))
		}
		if fd == nil {
			return nil, "unknown"
		}
		if i == 0 && (rt.body == "*" || string(fd.Name()) == rt.body) {
			return nil, "is a field of the request body; set it there"
		}
		if i == len(parts)-1 {
			break
		}
		if fd.Message() == nil || fd.IsList() || fd.IsMap() {
			return nil, "unknown"
		}
		md = fd.Message()
	}
	if fd.IsMap() || (fd.Message() != nil && !strings.HasPrefix(string(fd.Message().FullName()), "google.protobuf.")) {
		return nil, "names a structured field, which the query cannot set"
	}
	return fd, ""
}

// checkScalar says what is wrong with v as a value of fd ("" if nothing).
func checkScalar(fd protoreflect.FieldDescriptor, v string) string {
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
