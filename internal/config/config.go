// Package config is PM's one configuration struct, filled from the
// environment (and a few flags) in one place, with defaults and Validate.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config is everything PM reads at startup.
type Config struct {
	Server        Server
	Storage       Storage
	Log           Log
	CRM           CRM
	Deploy        Deploy
	Reconcile     Reconcile
	Metrics       Metrics
	PackageDelete PackageDelete
	// Auth, TLS and CORS are the security settings (security.go).
	Auth Auth
	TLS  TLS
	CORS CORS
	// Audit is the audit trail's retention and sources (audit.go).
	Audit Audit
	// Tracing is OpenTelemetry tracing from the OTEL_* variables (tracing.go).
	Tracing Tracing
	// Gateway is the reverse proxy to the invocation gateway (gateway.go).
	Gateway Gateway
}

// Server is the API listener.
type Server struct {
	// Host and Port form the one listen address for every protocol.
	Host string
	Port int
	// ShutdownTimeout bounds the drain of in-flight requests on SIGTERM.
	ShutdownTimeout time.Duration
	// MaxBodyBytes caps a request message after decompression, on every
	// protocol; larger ones get 413 / resource_exhausted.
	MaxBodyBytes int64
	// ReadTimeout bounds reading a request's headers and body.
	ReadTimeout time.Duration
	// IdleTimeout closes keep-alive connections that carry no request.
	IdleTimeout time.Duration
	// RequestTimeout bounds one unary call; it must exceed the CRM timeout,
	// since a deploy waits up to one CRM call.
	RequestTimeout time.Duration
	// MaxConnections caps concurrent client connections.
	MaxConnections int
	// MaxHeaderBytes caps request headers.
	MaxHeaderBytes int
	// Workers is accepted for compatibility with the Rust PM; when set it
	// caps GOMAXPROCS.
	Workers int
}

// Addr is host:port.
func (s Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Storage selects and tunes the store.
type Storage struct {
	// Type is "memory" or "postgres".
	Type string
	// DatabaseURL is the Postgres DSN when Type is postgres.
	DatabaseURL string
	// AutoMigrate applies pending migrations at startup.
	AutoMigrate bool
	// MaxConns caps the pool (0: pgx default).
	MaxConns int
	// Timeout bounds every storage call, so a dead database fails fast.
	Timeout time.Duration
}

// Log configures slog.
type Log struct {
	Level  slog.Level
	Format string // "json" or "text"
}

// ClusterTLS is the TLS setup of one CRM connection.
type ClusterTLS struct {
	CAFile             string
	CertFile           string
	KeyFile            string
	InsecureSkipVerify bool
	ServerName         string
}

// Cluster is one CRM endpoint.
type Cluster struct {
	Name string
	// URL is http://host:port (h2c) or https://host:port (TLS).
	URL string
	TLS ClusterTLS
	// Generation pins the CRM wire generation the cluster speaks (1 or 2);
	// 0 lets PM detect it.
	Generation int
}

// CRM configures the clusters and how PM talks to their CRMs.
type CRM struct {
	// Clusters are the configured CRMs; empty means PM starts an embedded
	// simulated cluster named "default".
	Clusters                []Cluster
	Timeout                 time.Duration
	RetryAttempts           int
	HealthCheckInterval     time.Duration
	HealthCacheTTL          time.Duration
	BreakerFailureThreshold int
	BreakerTimeout          time.Duration
	// EmbeddedSimulator is true when no CRM is configured.
	EmbeddedSimulator bool
}

// Deploy is the deployment policy.
type Deploy struct {
	MaxRetries          int
	RollbackOnPartial   bool
	ReplicaCap          int
	ReplicaAlgorithm    string // "quorum" or "independent"
	DefaultAvailability float64
	// HysteresisMargin keeps an existing replica count unless a new plan
	// differs by more than this many replicas.
	HysteresisMargin int
	// Parallelism bounds concurrent CRM calls of one fan-out.
	Parallelism int
	// StatusPollInterval is how often the background poller refreshes
	// deployment conditions from CRMs (0 disables it).
	StatusPollInterval time.Duration
	// RetryBackoff is the base of the linear backoff between attempts.
	RetryBackoff time.Duration
}

// Reconcile configures the background reconciler.
type Reconcile struct {
	Interval       time.Duration
	SelfHeal       bool
	DeleteOrphans  bool
	IdempotencyTTL time.Duration
	OperationLease time.Duration
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Enabled bool
	Port    int
}

// PackageDelete is the package-delete policy.
type PackageDelete struct {
	// Cascade deletes a package's deployments before the package.
	Cascade bool
}

// Default returns the embedded defaults.
func Default() Config {
	return Config{
		Server: Server{
			Host: "0.0.0.0", Port: 8080, ShutdownTimeout: 15 * time.Second, MaxBodyBytes: 4 << 20,
			ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, RequestTimeout: 60 * time.Second,
			MaxConnections: 1024, MaxHeaderBytes: 64 << 10,
		},
		Storage: Storage{Type: "memory", AutoMigrate: true, Timeout: 5 * time.Second},
		Log:     Log{Level: slog.LevelInfo, Format: "json"},
		CRM: CRM{
			Timeout: 30 * time.Second, RetryAttempts: 3, HealthCheckInterval: 60 * time.Second,
			HealthCacheTTL: 15 * time.Second, BreakerFailureThreshold: 5, BreakerTimeout: 60 * time.Second,
		},
		Deploy: Deploy{
			MaxRetries: 2, ReplicaCap: 50, ReplicaAlgorithm: "quorum", DefaultAvailability: 0.99,
			HysteresisMargin: 1, Parallelism: 128, StatusPollInterval: 30 * time.Second,
			RetryBackoff: 200 * time.Millisecond,
		},
		Reconcile: Reconcile{Interval: 30 * time.Second, SelfHeal: true, IdempotencyTTL: 24 * time.Hour, OperationLease: 30 * time.Second},
		Metrics:   Metrics{Enabled: true, Port: 9090},
		Auth: Auth{
			Mode: "auto", FailureLimit: 60, ReloadInterval: 5 * time.Second,
			OIDC: OIDC{RoleClaim: "role", PrincipalClaim: "sub", ClockSkew: 60 * time.Second},
		},
		Audit:   DefaultAudit(),
		Tracing: Tracing{Protocol: "http/protobuf", ServiceName: "oaas-pm"},
		Gateway: DefaultGateway(),
	}
}

// Lookup reads one environment variable; os.LookupEnv in production.
type Lookup func(key string) (string, bool)

// FromEnv loads the defaults overlaid with the process environment.
func FromEnv() (Config, error) { return Load(os.LookupEnv) }

// Load fills a Config from lookup over Default and validates it. Every error
// names the variable at fault; all of them are reported together.
func Load(lookup Lookup) (Config, error) {
	c := Default()
	r := reader{lookup: lookup}

	r.str("SERVER_HOST", &c.Server.Host)
	r.int("SERVER_PORT", &c.Server.Port)
	r.int("SERVER_WORKERS", &c.Server.Workers)
	r.duration("SERVER_SHUTDOWN_TIMEOUT", &c.Server.ShutdownTimeout)
	r.int64("SERVER_MAX_BODY_BYTES", &c.Server.MaxBodyBytes)
	r.duration("SERVER_READ_TIMEOUT", &c.Server.ReadTimeout)
	r.duration("SERVER_IDLE_TIMEOUT", &c.Server.IdleTimeout)
	r.duration("SERVER_REQUEST_TIMEOUT", &c.Server.RequestTimeout)
	r.int("SERVER_MAX_CONNECTIONS", &c.Server.MaxConnections)
	r.int("SERVER_MAX_HEADER_BYTES", &c.Server.MaxHeaderBytes)

	r.str("STORAGE_TYPE", &c.Storage.Type)
	r.str("DATABASE_URL", &c.Storage.DatabaseURL)
	r.bool("DATABASE_AUTO_MIGRATE", &c.Storage.AutoMigrate)
	r.int("DATABASE_MAX_CONNS", &c.Storage.MaxConns)
	r.duration("DATABASE_TIMEOUT", &c.Storage.Timeout)

	// RUST_LOG is the Rust PM's knob; LOG_LEVEL wins when both are set.
	if v, ok := lookup("RUST_LOG"); ok && v != "" {
		r.level("RUST_LOG", rustLevel(v), &c.Log.Level)
	}
	if v, ok := lookup("LOG_LEVEL"); ok && v != "" {
		r.level("LOG_LEVEL", v, &c.Log.Level)
	}
	r.str("LOG_FORMAT", &c.Log.Format)

	r.clusters(&c.CRM)
	r.duration("CRM_DEFAULT_TIMEOUT", &c.CRM.Timeout)
	r.int("CRM_DEFAULT_RETRY_ATTEMPTS", &c.CRM.RetryAttempts)
	r.duration("CRM_HEALTH_CHECK_INTERVAL", &c.CRM.HealthCheckInterval)
	r.duration("CRM_HEALTH_CACHE_TTL", &c.CRM.HealthCacheTTL)
	r.int("CRM_CIRCUIT_BREAKER_FAILURE_THRESHOLD", &c.CRM.BreakerFailureThreshold)
	r.duration("CRM_CIRCUIT_BREAKER_TIMEOUT", &c.CRM.BreakerTimeout)

	r.int("DEPLOY_MAX_RETRIES", &c.Deploy.MaxRetries)
	r.bool("DEPLOY_ROLLBACK_ON_PARTIAL", &c.Deploy.RollbackOnPartial)
	r.int("DEPLOY_REPLICA_CAP", &c.Deploy.ReplicaCap)
	r.str("DEPLOY_REPLICA_ALGORITHM", &c.Deploy.ReplicaAlgorithm)
	r.float("DEPLOY_DEFAULT_AVAILABILITY", &c.Deploy.DefaultAvailability)
	r.int("DEPLOY_HYSTERESIS_MARGIN", &c.Deploy.HysteresisMargin)
	r.int("DEPLOY_PARALLELISM", &c.Deploy.Parallelism)
	r.duration("DEPLOY_STATUS_POLL_INTERVAL", &c.Deploy.StatusPollInterval)
	r.duration("DEPLOY_RETRY_BACKOFF", &c.Deploy.RetryBackoff)
	r.bool("PACKAGE_DELETE_CASCADE", &c.PackageDelete.Cascade)

	r.duration("RECONCILE_INTERVAL", &c.Reconcile.Interval)
	r.bool("RECONCILE_SELF_HEAL", &c.Reconcile.SelfHeal)
	r.bool("RECONCILE_DELETE_ORPHANS", &c.Reconcile.DeleteOrphans)
	r.duration("IDEMPOTENCY_KEY_TTL", &c.Reconcile.IdempotencyTTL)
	r.duration("OPERATION_LEASE", &c.Reconcile.OperationLease)

	r.bool("METRICS_ENABLED", &c.Metrics.Enabled)
	r.int("METRICS_PORT", &c.Metrics.Port)

	r.security(&c)
	r.audit(&c.Audit)
	r.tracing(&c.Tracing)
	r.gateway(&c.Gateway)

	// Parse errors and range errors are reported together, so one start
	// tells the operator everything that is wrong.
	return c, errors.Join(errors.Join(r.errs...), c.Validate())
}

// Validate checks ranges and combinations; messages name the variable.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Server.Port < 0 || c.Server.Port > 65535 {
		bad("SERVER_PORT: %d is not a port (0-65535)", c.Server.Port)
	}
	if c.Server.MaxBodyBytes <= 0 {
		bad("SERVER_MAX_BODY_BYTES: must be positive")
	}
	if c.Server.ReadTimeout <= 0 {
		bad("SERVER_READ_TIMEOUT: must be positive")
	}
	if c.Server.IdleTimeout <= 0 {
		bad("SERVER_IDLE_TIMEOUT: must be positive")
	}
	if c.Server.RequestTimeout <= c.CRM.Timeout {
		bad("SERVER_REQUEST_TIMEOUT: %s must exceed CRM_DEFAULT_TIMEOUT (%s): a deploy waits for one CRM call", c.Server.RequestTimeout, c.CRM.Timeout)
	}
	if c.Server.MaxConnections < 1 {
		bad("SERVER_MAX_CONNECTIONS: must be at least 1")
	}
	if c.Server.MaxHeaderBytes < 4096 {
		bad("SERVER_MAX_HEADER_BYTES: must be at least 4096")
	}
	if c.Server.Workers < 0 {
		bad("SERVER_WORKERS: must not be negative")
	}
	switch c.Storage.Type {
	case "memory":
	case "postgres":
		if c.Storage.DatabaseURL == "" {
			bad("DATABASE_URL: required when STORAGE_TYPE=postgres")
		}
	default:
		bad("STORAGE_TYPE: %q is not supported (memory or postgres)", c.Storage.Type)
	}
	if c.Storage.Timeout <= 0 {
		bad("DATABASE_TIMEOUT: must be positive")
	}
	if c.Log.Format != "json" && c.Log.Format != "text" {
		bad("LOG_FORMAT: %q is not supported (json or text)", c.Log.Format)
	}
	errs = append(errs, c.CRM.Validate(), c.Deploy.Validate(), c.Reconcile.Validate())
	if c.Metrics.Port < 0 || c.Metrics.Port > 65535 {
		bad("METRICS_PORT: %d is not a port", c.Metrics.Port)
	}
	errs = append(errs, c.validateSecurity()...)
	errs = append(errs, c.Audit.validate()...)
	return errors.Join(errs...)
}

// Validate checks the CRM settings; the cluster package calls it too, so
// the rules live here once.
func (c CRM) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Timeout <= 0 {
		bad("CRM_DEFAULT_TIMEOUT: must be positive")
	}
	if c.RetryAttempts < 0 {
		bad("CRM_DEFAULT_RETRY_ATTEMPTS: must not be negative")
	}
	if c.HealthCacheTTL < 0 {
		bad("CRM_HEALTH_CACHE_TTL: must not be negative")
	}
	if c.HealthCheckInterval < 0 {
		bad("CRM_HEALTH_CHECK_INTERVAL: must not be negative")
	}
	if c.BreakerFailureThreshold < 1 {
		bad("CRM_CIRCUIT_BREAKER_FAILURE_THRESHOLD: must be at least 1")
	}
	if c.BreakerTimeout <= 0 {
		bad("CRM_CIRCUIT_BREAKER_TIMEOUT: must be positive")
	}
	seen := map[string]bool{}
	for _, cl := range c.Clusters {
		switch {
		case cl.Name == "":
			bad("CRM_CLUSTERS: cluster with URL %q has no name", cl.URL)
		case seen[cl.Name]:
			bad("CRM_CLUSTERS: cluster %q is defined twice", cl.Name)
		}
		seen[cl.Name] = true
	}
	return errors.Join(errs...)
}

// Validate checks the deployment policy; the deploy package calls it too.
func (d Deploy) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if d.MaxRetries < 0 {
		bad("DEPLOY_MAX_RETRIES: must not be negative")
	}
	if d.ReplicaCap < 1 {
		bad("DEPLOY_REPLICA_CAP: must be at least 1")
	}
	if d.ReplicaAlgorithm != "quorum" && d.ReplicaAlgorithm != "independent" {
		bad("DEPLOY_REPLICA_ALGORITHM: %q is not supported (quorum or independent)", d.ReplicaAlgorithm)
	}
	if d.DefaultAvailability <= 0 || d.DefaultAvailability > 1 {
		bad("DEPLOY_DEFAULT_AVAILABILITY: must be in (0,1]")
	}
	if d.HysteresisMargin < 0 {
		bad("DEPLOY_HYSTERESIS_MARGIN: must not be negative")
	}
	if d.Parallelism < 1 {
		bad("DEPLOY_PARALLELISM: must be at least 1")
	}
	if d.StatusPollInterval < 0 {
		bad("DEPLOY_STATUS_POLL_INTERVAL: must not be negative")
	}
	if d.RetryBackoff < 0 {
		bad("DEPLOY_RETRY_BACKOFF: must not be negative")
	}
	return errors.Join(errs...)
}

// Validate checks the background work's settings; the deploy package
// calls it too.
func (r Reconcile) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if r.Interval < 0 {
		bad("RECONCILE_INTERVAL: must not be negative")
	}
	if r.OperationLease <= 0 {
		bad("OPERATION_LEASE: must be positive")
	}
	if r.IdempotencyTTL <= 0 {
		bad("IDEMPOTENCY_KEY_TTL: must be positive")
	}
	return errors.Join(errs...)
}

// clusterName is the rule for cluster names: they appear in env var names
// and in DNS-1123 unit ids.
var clusterName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)

type reader struct {
	lookup Lookup
	errs   []error
}

func (r *reader) get(key string) (string, bool) {
	v, ok := r.lookup(key)
	if !ok || strings.TrimSpace(v) == "" {
		return "", false
	}
	return strings.TrimSpace(v), true
}

func (r *reader) fail(key, v, want string) {
	r.errs = append(r.errs, fmt.Errorf("%s: %q is not %s", key, v, want))
}

func (r *reader) str(key string, dst *string) {
	if v, ok := r.get(key); ok {
		*dst = v
	}
}

func (r *reader) int(key string, dst *int) {
	if v, ok := r.get(key); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			r.fail(key, v, "an integer")
			return
		}
		*dst = n
	}
}

func (r *reader) int64(key string, dst *int64) {
	if v, ok := r.get(key); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			r.fail(key, v, "an integer")
			return
		}
		*dst = n
	}
}

func (r *reader) float(key string, dst *float64) {
	if v, ok := r.get(key); ok {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			r.fail(key, v, "a number")
			return
		}
		*dst = f
	}
}

func (r *reader) bool(key string, dst *bool) {
	if v, ok := r.get(key); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			r.fail(key, v, "a boolean (true or false)")
			return
		}
		*dst = b
	}
}

// duration accepts Go durations ("1.5s", "200ms") and, like the Rust PM,
// bare numbers of seconds ("30").
func (r *reader) duration(key string, dst *time.Duration) {
	v, ok := r.get(key)
	if !ok {
		return
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs < 0 {
			r.fail(key, v, "a non-negative duration")
			return
		}
		*dst = time.Duration(secs * float64(time.Second))
		return
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		r.fail(key, v, `a duration (seconds, or a Go duration such as "500ms")`)
		return
	}
	*dst = d
}

func (r *reader) level(key, v string, dst *slog.Level) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(v)); err != nil {
		if strings.EqualFold(v, "trace") {
			*dst = slog.LevelDebug - 4
			return
		}
		r.fail(key, v, "a log level (debug, info, warn, error)")
		return
	}
	*dst = l
}

// rustLevel reduces an EnvFilter such as "info,oprc_pm=debug" to its
// default level, the part without a target.
func rustLevel(v string) string {
	level := "info"
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part != "" && !strings.Contains(part, "=") {
			level = part
		}
	}
	if level == "off" {
		return "error"
	}
	return level
}

// clusters reads CRM_DEFAULT_URL, CRM_CLUSTERS and each cluster's TLS
// variables (CRM_<NAME>_TLS_CA, ..._TLS_CERT, ..._TLS_KEY,
// ..._TLS_INSECURE_SKIP_VERIFY, ..._TLS_SERVER_NAME; NAME upper-cased with
// '-' as '_') and CRM_<NAME>_GENERATION. CRM_TLS_* without a name apply to
// every https cluster.
func (r *reader) clusters(crm *CRM) {
	var list []Cluster
	if v, ok := r.get("CRM_DEFAULT_URL"); ok {
		if err := checkURL(v); err != nil {
			r.errs = append(r.errs, fmt.Errorf("CRM_DEFAULT_URL: %w", err))
		} else {
			list = append(list, Cluster{Name: "default", URL: v})
		}
	}
	if v, ok := r.get("CRM_CLUSTERS"); ok {
		for _, entry := range strings.Split(v, ",") {
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			name, u, found := strings.Cut(entry, "=")
			name, u = strings.TrimSpace(name), strings.TrimSpace(u)
			switch {
			case !found:
				r.errs = append(r.errs, fmt.Errorf("CRM_CLUSTERS: entry %q is not name=url", entry))
				continue
			case !clusterName.MatchString(name):
				r.errs = append(r.errs, fmt.Errorf("CRM_CLUSTERS: cluster name %q must be 1-32 lowercase letters, digits or '-'", name))
				continue
			}
			if err := checkURL(u); err != nil {
				r.errs = append(r.errs, fmt.Errorf("CRM_CLUSTERS: cluster %q: %w", name, err))
				continue
			}
			list = append(list, Cluster{Name: name, URL: u})
		}
	}
	shared := ClusterTLS{}
	r.tls("CRM_TLS_", &shared)
	for i := range list {
		list[i].TLS = shared
		prefix := "CRM_" + strings.ToUpper(strings.ReplaceAll(list[i].Name, "-", "_")) + "_"
		r.tls(prefix+"TLS_", &list[i].TLS)
		r.generation(prefix+"GENERATION", &list[i].Generation)
	}
	crm.Clusters = list
	crm.EmbeddedSimulator = len(list) == 0
}

// generation reads a CRM wire generation pin: "1" or "2", or "auto" (the
// default, 0) for detection.
func (r *reader) generation(key string, dst *int) {
	v, ok := r.get(key)
	if !ok {
		return
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "auto", "":
		*dst = 0
	case "1":
		*dst = 1
	case "2":
		*dst = 2
	default:
		r.fail(key, v, "1, 2 or auto")
	}
}

func (r *reader) tls(prefix string, t *ClusterTLS) {
	r.str(prefix+"CA", &t.CAFile)
	r.str(prefix+"CERT", &t.CertFile)
	r.str(prefix+"KEY", &t.KeyFile)
	r.bool(prefix+"INSECURE_SKIP_VERIFY", &t.InsecureSkipVerify)
	r.str(prefix+"SERVER_NAME", &t.ServerName)
	if (t.CertFile == "") != (t.KeyFile == "") {
		r.errs = append(r.errs, fmt.Errorf("%sCERT and %sKEY: set both or neither", prefix, prefix))
	}
}

// checkURL accepts http:// (h2c) and https:// (TLS) URLs with a host and port.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%q is not a URL", raw)
	}
	if !slices.Contains([]string{"http", "https"}, u.Scheme) {
		return fmt.Errorf("%q: scheme must be http (h2c) or https (TLS)", raw)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("%q has no host", raw)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q has an invalid port", raw)
		}
	}
	if u.Path != "" && u.Path != "/" {
		return fmt.Errorf("%q: a CRM URL has no path", raw)
	}
	return nil
}
