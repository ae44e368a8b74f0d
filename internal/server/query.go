package server

import (
	"fmt"
	"net/url"
	"slices"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/oaas/pm/internal/restmodel"
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
func checkQuery(rt *restmodel.Route, q url.Values, vars map[string]string) (url.Values, []string, []string) {
	var unknown, problems []string
	pass := url.Values{}
	for alias, name := range restmodel.QueryAliases {
		av, given := q[alias]
		if !given {
			continue
		}
		if _, why := rt.QueryField(name); why != "" {
			continue // the route has no such field: the alias is unknown too
		}
		if v, both := q[name]; both && strings.Join(v, ",") != strings.Join(av, ",") {
			problems = append(problems, fmt.Sprintf("query parameters %q and %q (its older name) disagree; give one", name, alias))
			continue
		}
		q = cloneValues(q)
		q[name] = av
		delete(q, alias)
	}
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
		fd, why := rt.QueryField(name)
		switch {
		case why == restmodel.Unknown:
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
			if msg := restmodel.CheckScalar(fd, v); msg != "" {
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

func cloneValues(q url.Values) url.Values {
	out := make(url.Values, len(q))
	for k, v := range q {
		out[k] = v
	}
	return out
}

// pathVar reports whether name (a JSON or proto name) is a field the path
// binds, and the path's value for it.
func pathVar(rt *restmodel.Route, vars map[string]string, name string) (string, bool) {
	for field, v := range vars {
		if field == name {
			return v, true
		}
		if fd := rt.Method.Input().Fields().ByName(protoreflect.Name(field)); fd != nil && fd.JSONName() == name {
			return v, true
		}
	}
	return "", false
}
