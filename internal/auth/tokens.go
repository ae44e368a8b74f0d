package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"sigs.k8s.io/yaml"
)

// Credentials is the content of AUTH_TOKENS_FILE: the API tokens and the
// mTLS client certificates PM accepts, each mapped to a principal and a role.
//
//	tokens:
//	  # sha256 is the hex SHA-256 of the token, never the token itself:
//	  #   printf %s "$TOKEN" | sha256sum
//	  - principal: ci
//	    role: deployer
//	    sha256: <64 hex digits: the SHA-256 of the token>
//	clients:
//	  # subject names one identity of a verified client certificate:
//	  #   CN=NAME     the subject common name
//	  #   DNS:HOST    a DNS subject alternative name (case-insensitive)
//	  #   URI:URI     a URI SAN, e.g. a SPIFFE id
//	  #   email:ADDR  an email SAN (case-insensitive)
//	  - principal: argo-cd
//	    role: deployer
//	    subject: URI:spiffe://cluster.local/ns/argocd/sa/argocd-server
//
// Principal names are unique within tokens and within clients; a token hash
// appears once (one token cannot be two principals). When several client
// entries match one certificate the first in the file wins. Unknown fields
// are refused, so a misspelt key fails loudly instead of granting nothing.
type Credentials struct {
	Tokens  []TokenEntry  `json:"tokens"`
	Clients []ClientEntry `json:"clients"`
}

// TokenEntry is one API token.
type TokenEntry struct {
	Principal string `json:"principal"`
	Role      string `json:"role"`
	SHA256    string `json:"sha256"`
}

// ClientEntry maps one client-certificate identity to a principal.
type ClientEntry struct {
	Principal string `json:"principal"`
	Role      string `json:"role"`
	Subject   string `json:"subject"`
}

// credentialSet is a parsed, validated Credentials ready for lookups.
type credentialSet struct {
	tokens  []tokenRow
	clients []clientRow
}

type tokenRow struct {
	sum       [sha256.Size]byte
	principal Principal
}

type clientRow struct {
	kind, value string // kind is CN, DNS, URI or email
	principal   Principal
}

// CheckTokensFile validates the content of a tokens file the way PM does at
// start and at every reload, for tools and CI checks of a Secret.
func CheckTokensFile(data []byte) error {
	_, err := parseCredentials(data)
	return err
}

// parseCredentials reads and validates a tokens file. Errors name the entry
// (by index and principal) and never quote a hash or anything that might be
// a pasted token.
func parseCredentials(data []byte) (*credentialSet, error) {
	var c Credentials
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("tokens file is not valid: %w", err)
	}
	set := &credentialSet{}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	names := map[string]bool{}
	sums := map[[sha256.Size]byte]bool{}
	for i, e := range c.Tokens {
		at := fmt.Sprintf("tokens[%d]", i)
		role, err := checkEntry(at, e.Principal, e.Role, names)
		if err != nil {
			bad("%w", err)
			continue
		}
		raw, err := hex.DecodeString(strings.TrimSpace(e.SHA256))
		if err != nil || len(raw) != sha256.Size {
			bad("%s (principal %q): sha256 must be 64 hexadecimal digits, the SHA-256 of the token", at, e.Principal)
			continue
		}
		var sum [sha256.Size]byte
		copy(sum[:], raw)
		if sums[sum] {
			bad("%s (principal %q): the same token hash appears twice", at, e.Principal)
			continue
		}
		sums[sum] = true
		set.tokens = append(set.tokens, tokenRow{sum: sum, principal: Principal{Name: e.Principal, Role: role, Method: MethodToken}})
	}

	names = map[string]bool{}
	for i, e := range c.Clients {
		at := fmt.Sprintf("clients[%d]", i)
		role, err := checkEntry(at, e.Principal, e.Role, names)
		if err != nil {
			bad("%w", err)
			continue
		}
		kind, value, err := parseSubject(e.Subject)
		if err != nil {
			bad("%s (principal %q): %w", at, e.Principal, err)
			continue
		}
		set.clients = append(set.clients, clientRow{kind: kind, value: value, principal: Principal{Name: e.Principal, Role: role, Method: MethodMTLS}})
	}
	if len(set.tokens) == 0 && len(set.clients) == 0 && len(errs) == 0 {
		bad("tokens file has no tokens and no clients")
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return set, nil
}

func checkEntry(at, principal, role string, names map[string]bool) (Role, error) {
	if strings.TrimSpace(principal) == "" || len(principal) > 256 || strings.ContainsFunc(principal, isControl) {
		return 0, fmt.Errorf("%s: principal must be 1-256 printable characters", at)
	}
	if names[principal] {
		return 0, fmt.Errorf("%s: principal %q appears twice", at, principal)
	}
	names[principal] = true
	r, err := ParseRole(role)
	if err != nil {
		return 0, fmt.Errorf("%s (principal %q): %w", at, principal, err)
	}
	return r, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// parseSubject splits "CN=x", "DNS:x", "URI:x" or "email:x".
func parseSubject(s string) (kind, value string, err error) {
	s = strings.TrimSpace(s)
	for _, k := range []struct{ prefix, kind string }{
		{"CN=", "CN"}, {"DNS:", "DNS"}, {"URI:", "URI"}, {"email:", "email"},
	} {
		if len(s) > len(k.prefix) && strings.EqualFold(s[:len(k.prefix)], k.prefix) {
			return k.kind, s[len(k.prefix):], nil
		}
	}
	return "", "", errors.New(`subject must be CN=NAME, DNS:HOST, URI:URI or email:ADDRESS`)
}

// token finds the principal of a presented API token. The token is hashed
// and compared with every entry in constant time, so neither the position
// of a match nor a common prefix shows in the timing.
func (s *credentialSet) token(presented string) (Principal, bool) {
	sum := sha256.Sum256([]byte(presented))
	found := -1
	for i := range s.tokens {
		if subtle.ConstantTimeCompare(sum[:], s.tokens[i].sum[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Principal{}, false
	}
	return s.tokens[found].principal, true
}

// client finds the principal of a verified client certificate.
func (s *credentialSet) client(cert *x509.Certificate) (Principal, bool) {
	for _, row := range s.clients {
		if row.matches(cert) {
			return row.principal, true
		}
	}
	return Principal{}, false
}

func (r clientRow) matches(cert *x509.Certificate) bool {
	switch r.kind {
	case "CN":
		return cert.Subject.CommonName == r.value
	case "DNS":
		for _, n := range cert.DNSNames {
			if strings.EqualFold(n, r.value) {
				return true
			}
		}
	case "URI":
		for _, u := range cert.URIs {
			if u.String() == r.value {
				return true
			}
		}
	case "email":
		for _, e := range cert.EmailAddresses {
			if strings.EqualFold(e, r.value) {
				return true
			}
		}
	}
	return false
}

// HashToken returns the hex SHA-256 of a token, the form AUTH_TOKENS_FILE
// stores; for tools that mint tokens and for tests.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
