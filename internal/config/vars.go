package config

import (
	"fmt"
	"io"
	"strings"
)

// Var documents one environment variable: `pm --help` and
// docs/configuration.md are written from this table, and tests hold it to
// the loader (every variable Load reads is here, and every default written
// here is the one Load applies).
type Var struct {
	// Name is the variable; a pattern (CRM_<NAME>_TLS_CA) when Pattern.
	Name string
	// Default is how the default reads ("" for none).
	Default string
	// Help says what it does.
	Help string
	// Group is the section it is listed under.
	Group string
	// Computed marks a default that depends on the machine or on other
	// variables, so it cannot be checked by setting it.
	Computed bool
	// Pattern marks a family of variables named after a cluster.
	Pattern bool
}

// Vars is every environment variable PM reads, in display order.
func Vars() []Var {
	var out []Var
	add := func(group string, vs ...Var) {
		for _, v := range vs {
			v.Group = group
			out = append(out, v)
		}
	}
	add("Server",
		Var{Name: "SERVER_HOST", Default: "127.0.0.1 without authentication, else 0.0.0.0", Computed: true, Help: "listen address of every protocol; beyond loopback only with authentication or AUTH_MODE=none"},
		Var{Name: "SERVER_PORT", Default: "8080", Help: "listen port"},
		Var{Name: "SERVER_SHUTDOWN_TIMEOUT", Default: "15s", Help: "drain deadline for in-flight requests on SIGTERM"},
		Var{Name: "SERVER_MAX_BODY_BYTES", Default: "4194304", Help: "largest request message after decompression, every protocol (413 / resource_exhausted)"},
		Var{Name: "SERVER_READ_TIMEOUT", Default: "30s", Help: "time to read a request's headers and body"},
		Var{Name: "SERVER_IDLE_TIMEOUT", Default: "2m0s", Help: "idle keep-alive connections are closed after this"},
		Var{Name: "SERVER_REQUEST_TIMEOUT", Default: "1m0s", Help: "deadline of one unary call (504 past it); must exceed CRM_DEFAULT_TIMEOUT"},
		Var{Name: "SERVER_MAX_CONNECTIONS", Default: "1024", Help: "concurrent client connections; more wait in the accept queue"},
		Var{Name: "SERVER_MAX_HEADER_BYTES", Default: "65536", Help: "largest request header block"},
		Var{Name: "SERVER_WORKERS", Help: "caps GOMAXPROCS when set"},
		Var{Name: "SERVER_TLS_CERT_FILE", Help: "certificate chain (PEM); with the key, the port speaks TLS only (HTTP/2 by ALPN); reloaded on change"},
		Var{Name: "SERVER_TLS_KEY_FILE", Help: "private key of SERVER_TLS_CERT_FILE"},
		Var{Name: "SERVER_TLS_CLIENT_CA_FILE", Help: "CA bundle for client certificates (mTLS principals from AUTH_TOKENS_FILE's clients)"},
	)
	add("Authentication and browsers",
		Var{Name: "AUTH_MODE", Default: "auto", Help: "auto: authenticate when a tokens file or an OIDC issuer is set; none: every caller is an admin (logged at every start)"},
		Var{Name: "AUTH_TOKENS_FILE", Help: "YAML of API tokens ({principal, role, sha256}) and mTLS clients; reloaded on change"},
		Var{Name: "AUTH_OIDC_ISSUER", Help: "accept JWTs from this issuer (turns OIDC on)"},
		Var{Name: "AUTH_OIDC_AUDIENCE", Help: "audience a JWT must carry"},
		Var{Name: "AUTH_OIDC_JWKS_URL", Help: "the issuer's JWKS (fetched on first use and on unknown key ids)"},
		Var{Name: "AUTH_OIDC_JWKS_FILE", Help: "a JWKS file instead of a URL (reloaded on change)"},
		Var{Name: "AUTH_OIDC_ROLE_CLAIM", Default: "role", Help: "claim holding the role; a dotted path reaches into objects"},
		Var{Name: "AUTH_OIDC_PRINCIPAL_CLAIM", Default: "sub", Help: "claim naming the principal"},
		Var{Name: "AUTH_OIDC_CLOCK_SKEW", Default: "1m0s", Help: "tolerated clock difference for exp/nbf/iat"},
		Var{Name: "AUTH_METRICS_OPEN", Default: "false", Help: "serve /metrics without a credential"},
		Var{Name: "AUTH_REFLECTION_OPEN", Default: "false", Help: "serve gRPC reflection without a credential"},
		Var{Name: "AUTH_FAILURE_LIMIT", Default: "60", Help: "failed authentications per minute from one source before 429 (0 off)"},
		Var{Name: "AUTH_RELOAD_INTERVAL", Default: "5s", Help: "how often the tokens, JWKS and TLS files are re-checked"},
		Var{Name: "CORS_ALLOWED_ORIGINS", Help: "browser origins allowed to call PM (comma-separated)"},
		Var{Name: "CORS_ALLOW_CREDENTIALS", Default: "false", Help: "let browsers send cookies and client certificates cross-origin (never with *)"},
	)
	add("Audit",
		Var{Name: "AUDIT_RETENTION", Default: "2160h0m0s", Help: "how long audit records are kept (0 forever)"},
		Var{Name: "AUDIT_PURGE_INTERVAL", Default: "1h0m0s", Help: "how often expired records are deleted"},
		Var{Name: "AUDIT_MEMORY_CAPACITY", Default: "10000", Help: "records the memory store keeps"},
		Var{Name: "AUDIT_DENIED_PER_MINUTE", Default: "60", Help: "records of refused calls per source per minute (0 no cap)"},
		Var{Name: "AUDIT_TRUST_FORWARDED_FOR", Default: "false", Help: "take the caller's address from X-Forwarded-For (behind a trusted proxy only)"},
	)
	add("Storage",
		Var{Name: "STORAGE_TYPE", Default: "memory", Help: "memory or postgres"},
		Var{Name: "DATABASE_URL", Help: "PostgreSQL DSN (required for postgres)"},
		Var{Name: "DATABASE_AUTO_MIGRATE", Default: "true", Help: "apply migrations at start-up"},
		Var{Name: "DATABASE_MAX_CONNS", Default: "4 × CPUs, at least 16", Computed: true, Help: "connection pool size"},
		Var{Name: "DATABASE_TIMEOUT", Default: "5s", Help: "bound of every database call, and of the start-up dial and ping"},
	)
	add("Logs, metrics, traces",
		Var{Name: "LOG_LEVEL", Default: "info", Help: "debug, info, warn or error"},
		Var{Name: "RUST_LOG", Help: "the Rust PM's level knob; LOG_LEVEL wins"},
		Var{Name: "LOG_FORMAT", Default: "json", Help: "json or text"},
		Var{Name: "METRICS_ENABLED", Default: "true", Help: "Prometheus metrics"},
		Var{Name: "METRICS_PORT", Default: "9090", Help: "extra port serving /metrics (also served on the API port)"},
		Var{Name: "OTEL_TRACES_EXPORTER", Help: "otlp turns tracing on, none off (off unless this or an OTLP endpoint is set)"},
		Var{Name: "OTEL_EXPORTER_OTLP_ENDPOINT", Help: "OTLP collector; setting it turns tracing on"},
		Var{Name: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", Help: "OTLP endpoint for traces only"},
		Var{Name: "OTEL_EXPORTER_OTLP_PROTOCOL", Default: "http/protobuf", Help: "http/protobuf or grpc"},
		Var{Name: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", Help: "protocol for traces only"},
		Var{Name: "OTEL_SERVICE_NAME", Default: "oaas-pm", Help: "service.name of the spans"},
		Var{Name: "OTEL_SDK_DISABLED", Default: "false", Help: "true turns tracing off whatever else is set"},
	)
	add("Clusters (CRMs)",
		Var{Name: "CRM_DEFAULT_URL", Help: "CRM of the cluster default (http:// h2c, https:// TLS)"},
		Var{Name: "CRM_CLUSTERS", Help: "more clusters: name=url,name=url (none at all: an embedded simulated cluster named default)"},
		Var{Name: "CRM_TLS_CA", Help: "CA for every https CRM (per cluster: CRM_<NAME>_TLS_CA)"},
		Var{Name: "CRM_TLS_CERT", Help: "client certificate for CRMs (mTLS)"},
		Var{Name: "CRM_TLS_KEY", Help: "key of CRM_TLS_CERT"},
		Var{Name: "CRM_TLS_INSECURE_SKIP_VERIFY", Default: "false", Help: "do not verify CRM certificates (tests only)"},
		Var{Name: "CRM_TLS_SERVER_NAME", Help: "expected CRM certificate name"},
		Var{Name: "CRM_<NAME>_TLS_CA, _CERT, _KEY, _INSECURE_SKIP_VERIFY, _SERVER_NAME", Pattern: true, Help: "the same per cluster (NAME upper-cased, - as _)"},
		Var{Name: "CRM_<NAME>_GENERATION", Default: "auto", Pattern: true, Help: "CRM wire generation of a cluster: 1 (lists answer deployment units), 2 (lists answer runtime summaries) or auto (detected from the services the CRM serves, kept with its health)"},
		Var{Name: "CRM_DEFAULT_TIMEOUT", Default: "30s", Help: "deadline of one CRM call"},
		Var{Name: "CRM_DEFAULT_RETRY_ATTEMPTS", Default: "3", Help: "retries of idempotent CRM reads"},
		Var{Name: "CRM_HEALTH_CHECK_INTERVAL", Default: "1m0s", Help: "background health refresh (0 off)"},
		Var{Name: "CRM_HEALTH_CACHE_TTL", Default: "15s", Help: "per-cluster health cache (0 off)"},
		Var{Name: "CRM_CIRCUIT_BREAKER_FAILURE_THRESHOLD", Default: "5", Help: "failures that open a cluster's breaker"},
		Var{Name: "CRM_CIRCUIT_BREAKER_TIMEOUT", Default: "1m0s", Help: "how long a breaker stays open before a trial call"},
	)
	add("Invocation gateway",
		Var{Name: "GATEWAY_URL", Help: "the OaaS invocation gateway; /api/gateway/{path} is proxied to {GATEWAY_URL}/{path} (503 when unset)"},
		Var{Name: "GATEWAY_TIMEOUT", Default: "30s", Help: "how long a proxied call may wait for the gateway's answer"},
		Var{Name: "GATEWAY_MAX_PAYLOAD_BYTES", Default: "52428800", Help: "largest proxied request body"},
	)
	add("Deployments",
		Var{Name: "DEPLOY_MAX_RETRIES", Default: "2", Help: "retries per cluster (attempts = 1 + retries)"},
		Var{Name: "DEPLOY_RETRY_BACKOFF", Default: "200ms", Help: "linear backoff base between attempts (× attempt, jittered)"},
		Var{Name: "DEPLOY_ROLLBACK_ON_PARTIAL", Default: "false", Help: "undo the clusters that succeeded when one fails"},
		Var{Name: "DEPLOY_REPLICA_ALGORITHM", Default: "quorum", Help: "quorum or independent"},
		Var{Name: "DEPLOY_REPLICA_CAP", Default: "50", Help: "most replicas a plan may choose"},
		Var{Name: "DEPLOY_DEFAULT_AVAILABILITY", Default: "0.99", Help: "availability target when a deployment gives none"},
		Var{Name: "DEPLOY_HYSTERESIS_MARGIN", Default: "1", Help: "re-plans within this many replicas keep the old count"},
		Var{Name: "DEPLOY_PARALLELISM", Default: "128", Help: "concurrent CRM calls of one fan-out"},
		Var{Name: "DEPLOY_STATUS_POLL_INTERVAL", Default: "30s", Help: "background condition refresh (0 off)"},
		Var{Name: "PACKAGE_DELETE_CASCADE", Default: "false", Help: "delete a package's deployments with it (else 409)"},
		Var{Name: "RECONCILE_INTERVAL", Default: "30s", Help: "drift repair period (jittered; 0 off)"},
		Var{Name: "RECONCILE_SELF_HEAL", Default: "true", Help: "re-deploy units missing from a cluster"},
		Var{Name: "RECONCILE_DELETE_ORPHANS", Default: "false", Help: "remove units with PM's id scheme that PM does not know"},
		Var{Name: "OPERATION_LEASE", Default: "30s", Help: "how long a PM owns an operation before another may resume it"},
		Var{Name: "IDEMPOTENCY_KEY_TTL", Default: "24h0m0s", Help: "how long Idempotency-Keys are remembered"},
	)
	return out
}

// WriteHelp writes the variables as aligned text, by group.
func WriteHelp(w io.Writer) {
	group := ""
	for _, v := range Vars() {
		if v.Group != group {
			group = v.Group
			_, _ = fmt.Fprintf(w, "\n%s:\n", group)
		}
		def := ""
		if v.Default != "" {
			def = " (default " + v.Default + ")"
		}
		_, _ = fmt.Fprintf(w, "  %s%s\n      %s\n", v.Name, def, v.Help)
	}
}

// WriteMarkdown writes the variables as the tables of docs/configuration.md.
func WriteMarkdown(w io.Writer) {
	_, _ = fmt.Fprintln(w, "# Configuration")
	_, _ = fmt.Fprintln(w)
	_, _ = fmt.Fprintln(w, "<!-- Generated by `go run ./cmd/pm env --markdown` from internal/config/vars.go; do not edit. -->")
	_, _ = fmt.Fprintln(w)
	_, _ = fmt.Fprintln(w, "PM reads its configuration from the environment; `-host`, `-port`, `-storage` and")
	_, _ = fmt.Fprintln(w, "`-database-url` override the matching variables. Bad values stop start-up with a message")
	_, _ = fmt.Fprintln(w, "naming the variable. Durations take seconds (`30`) or Go durations (`1m30s`).")
	group := ""
	for _, v := range Vars() {
		if v.Group != group {
			group = v.Group
			_, _ = fmt.Fprintf(w, "\n## %s\n\n| Variable | Default | Meaning |\n|---|---|---|\n", group)
		}
		def := "—"
		if v.Default != "" {
			def = "`" + v.Default + "`"
			if v.Computed {
				def = v.Default
			}
		}
		_, _ = fmt.Fprintf(w, "| `%s` | %s | %s |\n", v.Name, def, strings.ReplaceAll(v.Help, "|", "\\|"))
	}
}
