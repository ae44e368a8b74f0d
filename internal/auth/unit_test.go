package auth

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestRoles(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want Role
	}{{"viewer", Viewer}, {"Deployer", Deployer}, {" editor ", Editor}, {"ADMIN", Admin}} {
		got, err := ParseRole(tc.in)
		if err != nil || got != tc.want || got.String() != strings.ToLower(strings.TrimSpace(tc.in)) {
			t.Errorf("ParseRole(%q) = %v, %v", tc.in, got, err)
		}
	}
	for _, bad := range []string{"", "root", "viewers", "0"} {
		if _, err := ParseRole(bad); err == nil {
			t.Errorf("ParseRole(%q) accepted", bad)
		}
	}
	// Each role allows exactly itself and the roles below it.
	for _, have := range Roles() {
		for _, need := range Roles() {
			if got := have.Allows(need); got != (have >= need) {
				t.Errorf("%s.Allows(%s) = %v", have, need, got)
			}
		}
		if have.Allows(0) || Role(0).Allows(have) {
			t.Errorf("the zero role must allow and be allowed nothing (%s)", have)
		}
	}
	if Role(0).String() != "none" || Role(9).String() != "none" {
		t.Error("out-of-range roles must print as none")
	}
}

func TestPrincipalContext(t *testing.T) {
	t.Parallel()
	if _, ok := FromContext(context.Background()); ok {
		t.Error("empty context carries a principal")
	}
	p := Principal{Name: "ci", Role: Deployer, Method: MethodToken}
	got, ok := FromContext(WithPrincipal(context.Background(), p))
	if !ok || got != p {
		t.Errorf("got %+v %v", got, ok)
	}
}

func TestParseCredentials(t *testing.T) {
	t.Parallel()
	hash := HashToken("s3cret-token")
	good := fmt.Sprintf(`
tokens:
  - {principal: ci, role: deployer, sha256: %s}
clients:
  - {principal: argo, role: editor, subject: "URI:spiffe://c/ns/argocd/sa/argo"}
  - {principal: ops, role: admin, subject: "CN=ops"}
  - {principal: web, role: viewer, subject: "DNS:Web.Example"}
  - {principal: mail, role: viewer, subject: "email:Ops@Example.com"}
`, hash)
	set, err := parseCredentials([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := set.token("s3cret-token"); !ok || p != (Principal{Name: "ci", Role: Deployer, Method: MethodToken}) {
		t.Errorf("token lookup: %+v %v", p, ok)
	}
	for _, wrong := range []string{"", "s3cret-toke", "s3cret-token ", hash} {
		if _, ok := set.token(wrong); ok {
			t.Errorf("token %q accepted", wrong)
		}
	}

	spiffe, _ := url.Parse("spiffe://c/ns/argocd/sa/argo")
	certs := []struct {
		cert *x509.Certificate
		want string
	}{
		{&x509.Certificate{URIs: []*url.URL{spiffe}, Subject: pkix.Name{CommonName: "ops"}}, "argo"}, // first match in file order
		{&x509.Certificate{Subject: pkix.Name{CommonName: "ops"}}, "ops"},
		{&x509.Certificate{DNSNames: []string{"web.example"}}, "web"},
		{&x509.Certificate{EmailAddresses: []string{"ops@example.com"}}, "mail"},
		{&x509.Certificate{Subject: pkix.Name{CommonName: "OPS"}}, ""}, // CN is exact
		{&x509.Certificate{DNSNames: []string{"ops"}}, ""},             // a DNS SAN is not a CN
	}
	for _, c := range certs {
		p, ok := set.client(c.cert)
		if c.want == "" {
			if ok {
				t.Errorf("%+v mapped to %+v", c.cert.Subject, p)
			}
			continue
		}
		if !ok || p.Name != c.want || p.Method != MethodMTLS {
			t.Errorf("want %s, got %+v %v", c.want, p, ok)
		}
	}
}

func TestParseCredentialsErrors(t *testing.T) {
	t.Parallel()
	h := HashToken("a")
	pasted := "this-is-a-pasted-raw-token"
	cases := []struct {
		name, file string
		want       []string
	}{
		{"not yaml", "tokens: [", []string{"not valid"}},
		{"unknown field", "tokens: [{principal: a, role: viewer, sha256: " + h + ", token: " + pasted + "}]", []string{"unknown field"}},
		{"empty", "tokens: []", []string{"no tokens and no clients"}},
		{"bad role", "tokens: [{principal: a, role: root, sha256: " + h + "}]", []string{"tokens[0]", `"a"`, "unknown role"}},
		{"raw token instead of hash", "tokens: [{principal: a, role: viewer, sha256: " + pasted + "}]", []string{"tokens[0]", "64 hexadecimal"}},
		{"duplicate hash", "tokens: [{principal: a, role: viewer, sha256: " + h + "}, {principal: b, role: admin, sha256: " + h + "}]", []string{"tokens[1]", "twice"}},
		{"duplicate principal", "tokens: [{principal: a, role: viewer, sha256: " + h + "}, {principal: a, role: admin, sha256: " + HashToken("b") + "}]", []string{"tokens[1]", "twice"}},
		{"no principal", "tokens: [{role: viewer, sha256: " + h + "}]", []string{"tokens[0]", "principal"}},
		{"bad subject", "clients: [{principal: a, role: viewer, subject: " + pasted + "}]", []string{"clients[0]", "CN=NAME"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := CheckTokensFile([]byte(tc.file))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), pasted) || strings.Contains(err.Error(), h) {
				t.Errorf("error quotes a credential: %q", err)
			}
		})
	}
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestLimiterBlocksAndForgives(t *testing.T) {
	t.Parallel()
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l := NewLimiter(3, time.Minute, 0)
	l.now = c.now
	src := "192.0.2.7:5555"
	for i := range 2 {
		if l.Fail(src) {
			t.Fatalf("blocked after %d failures", i+1)
		}
	}
	if blocked, _ := l.Blocked(src); blocked {
		t.Fatal("blocked below the limit")
	}
	if !l.Fail(src) {
		t.Fatal("third failure did not block")
	}
	if blocked, left := l.Blocked("192.0.2.7:6666"); !blocked || left != time.Minute {
		t.Errorf("same address, other port: blocked=%v left=%v", blocked, left)
	}
	if blocked, _ := l.Blocked("192.0.2.8:1"); blocked {
		t.Error("another address is blocked")
	}
	c.advance(59 * time.Second)
	if blocked, left := l.Blocked(src); !blocked || left != time.Second {
		t.Errorf("before the window ends: blocked=%v left=%v", blocked, left)
	}
	c.advance(time.Second)
	if blocked, _ := l.Blocked(src); blocked {
		t.Error("still blocked after the window")
	}
	// Failures spread over more than a window never block.
	for range 10 {
		c.advance(31 * time.Second)
		if l.Fail("192.0.2.9:1") {
			t.Fatal("slow failures blocked")
		}
	}
}

func TestLimiterGroupsIPv6By64(t *testing.T) {
	t.Parallel()
	l := NewLimiter(2, time.Minute, 0)
	l.Fail("[2001:db8:1:2::1]:443")
	l.Fail("[2001:db8:1:2:ffff::9]:443")
	if blocked, _ := l.Blocked("[2001:db8:1:2::abcd]:1"); !blocked {
		t.Error("rotating addresses inside one /64 escaped the limit")
	}
	if blocked, _ := l.Blocked("[2001:db8:1:3::1]:1"); blocked {
		t.Error("the neighbouring /64 is blocked")
	}
	// IPv4-mapped IPv6 counts as the IPv4 address.
	l.Fail("[::ffff:192.0.2.1]:1")
	l.Fail("192.0.2.1:2")
	if blocked, _ := l.Blocked("192.0.2.1:3"); !blocked {
		t.Error("mapped and plain IPv4 counted apart")
	}
	if l.Fail("not-an-address") {
		t.Error("an unparsable source was blocked")
	}
}

func TestLimiterMemoryIsBounded(t *testing.T) {
	t.Parallel()
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l := NewLimiter(1, time.Minute, 100)
	l.now = c.now
	l.Fail("198.51.100.1:1") // blocked at once (limit 1)
	for i := range 20_000 {
		l.Fail(fmt.Sprintf("10.%d.%d.%d:1", i>>16, (i>>8)&255, i&255))
	}
	if n := l.Len(); n > 100 {
		t.Errorf("tracking %d sources, capacity 100", n)
	}
	if blocked, _ := l.Blocked("198.51.100.1:1"); !blocked {
		t.Error("a flood of new sources evicted a blocked one")
	}
	// Once entries expire the table makes room again.
	c.advance(3 * time.Minute)
	l.Fail("203.0.113.5:1")
	if blocked, _ := l.Blocked("203.0.113.5:1"); !blocked {
		t.Error("new source not tracked after expiry")
	}
	if n := l.Len(); n > 2 {
		t.Errorf("expired entries not swept: %d", n)
	}
}

func TestNilLimiter(t *testing.T) {
	t.Parallel()
	var l *Limiter
	if NewLimiter(0, 0, 0) != nil || l.Fail("192.0.2.1:1") || l.Len() != 0 {
		t.Error("a disabled limiter limits")
	}
	if blocked, _ := l.Blocked("192.0.2.1:1"); blocked {
		t.Error("a disabled limiter blocks")
	}
}

func TestClaimPaths(t *testing.T) {
	t.Parallel()
	claims := map[string]any{
		"role":              "editor",
		"realm_access":      map[string]any{"roles": []any{"offline", "viewer", "deployer"}},
		"https://x.io/role": "admin",
		"groups":            []any{"dev", 7},
	}
	for _, tc := range []struct {
		path string
		want Role
		ok   bool
	}{
		{"role", Editor, true}, {"realm_access.roles", Deployer, true}, {"https://x.io/role", Admin, true},
		{"groups", 0, false}, {"missing", 0, false}, {"realm_access", 0, false},
	} {
		got, ok := roleFrom(claimAt(claims, tc.path))
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: got %v %v, want %v %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
}
