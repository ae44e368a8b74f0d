package config

import (
	"fmt"
	"net/url"
	"time"
)

// Gateway is the reverse proxy to the OaaS invocation gateway under
// /api/gateway/.
type Gateway struct {
	// URL is GATEWAY_URL; empty: the proxy answers 503.
	URL string
	// Timeout is GATEWAY_TIMEOUT, how long a proxied call may wait for the
	// gateway's answer.
	Timeout time.Duration
	// MaxPayloadBytes is GATEWAY_MAX_PAYLOAD_BYTES, the largest proxied body.
	MaxPayloadBytes int64
}

// DefaultGateway is the proxy's defaults (the current OaaS PM's).
func DefaultGateway() Gateway {
	return Gateway{Timeout: 30 * time.Second, MaxPayloadBytes: 50 << 20}
}

func (r *reader) gateway(g *Gateway) {
	r.str("GATEWAY_URL", &g.URL)
	r.duration("GATEWAY_TIMEOUT", &g.Timeout)
	r.int64("GATEWAY_MAX_PAYLOAD_BYTES", &g.MaxPayloadBytes)
	if g.URL != "" {
		if u, err := url.Parse(g.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			r.errs = append(r.errs, fmt.Errorf("GATEWAY_URL: %q is not an http(s) URL", g.URL))
		}
	}
	if g.Timeout <= 0 {
		r.errs = append(r.errs, fmt.Errorf("GATEWAY_TIMEOUT: must be positive"))
	}
	if g.MaxPayloadBytes <= 0 {
		r.errs = append(r.errs, fmt.Errorf("GATEWAY_MAX_PAYLOAD_BYTES: must be positive"))
	}
}
