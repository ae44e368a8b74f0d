// Package auth decides who is calling PM and what they may do: principals
// and roles, authentication by API token, OIDC/JWT bearer token or mTLS
// client certificate, a limiter for sources that keep failing, the HTTP
// middleware that refuses unauthenticated calls in the caller's protocol,
// and the one table that maps every RPC to the least role allowed to call it.
//
// Nothing here logs or returns a credential: errors name what was wrong
// ("unknown API token", "token expired"), never the token or header.
package auth

import (
	"context"
	"fmt"
	"strings"
)

// Role is a level of trust; each role may do everything the roles below it
// may. The zero Role is no role and allows nothing.
type Role int

// The roles, least to most trusted.
const (
	// Viewer reads everything but the audit log.
	Viewer Role = iota + 1
	// Deployer also creates, updates and deletes deployments.
	Deployer
	// Editor also writes packages.
	Editor
	// Admin may do everything, including orphan deletion and reading the
	// audit log.
	Admin
)

var roleNames = [...]string{"", "viewer", "deployer", "editor", "admin"}

// Roles lists every role, least trusted first.
func Roles() []Role { return []Role{Viewer, Deployer, Editor, Admin} }

// String is the role's lower-case name ("editor"), "none" for the zero Role.
func (r Role) String() string {
	if r < Viewer || r > Admin {
		return "none"
	}
	return roleNames[r]
}

// Allows reports whether a principal with role r may do what needs role
// required.
func (r Role) Allows(required Role) bool {
	return r >= Viewer && r <= Admin && required >= Viewer && r >= required
}

// ParseRole reads a role name, case-insensitively.
func ParseRole(s string) (Role, error) {
	for r := Viewer; r <= Admin; r++ {
		if strings.EqualFold(strings.TrimSpace(s), roleNames[r]) {
			return r, nil
		}
	}
	return 0, fmt.Errorf("unknown role %q (viewer, deployer, editor or admin)", s)
}

// Method is how a principal proved who it is.
type Method string

// The authentication methods.
const (
	MethodToken Method = "token"
	MethodOIDC  Method = "oidc"
	MethodMTLS  Method = "mtls"
	// MethodNone marks the anonymous principal of AUTH_MODE=none.
	MethodNone Method = "none"
)

// Principal is the authenticated caller of one request.
type Principal struct {
	// Name identifies the caller in logs and the audit trail: the token's
	// principal, the JWT's principal claim, the certificate's mapped name.
	Name   string
	Role   Role
	Method Method
}

// Anonymous is the principal of every request when authentication is off
// (AUTH_MODE=none): it may do everything, and the audit trail says so.
var Anonymous = Principal{Name: "anonymous", Role: Admin, Method: MethodNone}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal that ctx carries, if any.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
