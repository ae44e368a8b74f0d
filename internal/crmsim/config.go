package crmsim

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"connectrpc.com/connect"
)

// Config describes one simulated cluster. The zero value is a healthy,
// instant three-node cluster on a free loopback port; every knob after Addr
// can also be changed while the simulator runs, through the Sim's setters.
type Config struct {
	// Addr is the listen address; "127.0.0.1:0" (the default) picks a free port.
	Addr string
	// EnvName is the environment (cluster) name reported by GetEnvHealth.
	// Default "default".
	EnvName string
	// StrictEnv makes GetEnvHealth answer NOT_FOUND for a non-empty env other
	// than EnvName. Off by default because field CRMs only know their own env
	// and PM may address it by a cluster name that differs from the env name.
	StrictEnv bool
	// Generation is the CRM wire generation the simulator plays: 1 (the
	// default; crm-wire-contract.md) or 2 (the current upstream CRM,
	// upstream-head-delta.md §2.6): ListClassRuntimes and GetClassRuntime
	// answer oaas.runtime.ClassRuntimeSummary messages and ignore the
	// package, class and environment filters, TopologyService is served and
	// the oaas.package.PackageService stub is not, GetDeploymentStatus
	// answers a partly filled unit, and crm_version defaults to
	// Generation2CRMVersion. Fixed at Start.
	Generation int
	// CRMVersion is reported as crm_version. Default DefaultCRMVersion, or
	// Generation2CRMVersion for generation 2.
	CRMVersion string
	// OmitCRMVersion leaves crm_version out of GetEnvHealth, as
	// first-generation field CRMs do.
	OmitCRMVersion bool
	// Namespace is the Kubernetes namespace of the simulated resources. Default "oaas".
	Namespace string

	// NodeCount is the number of nodes in the cluster. Zero means 3.
	NodeCount uint32
	// ReadyNodes is how many of them are ready; nil means all of them.
	// It is clamped to NodeCount.
	ReadyNodes *uint32
	// Availability is the availability the CRM's operator forces, in [0,1];
	// nil leaves the field absent so PM must fall back to node readiness.
	Availability *float64

	// Latency delays every CRM call (reflection excluded) before it is answered.
	Latency time.Duration
	// FailFirstDeploys makes the first N Deploy calls fail.
	FailFirstDeploys int
	// FailDeployCode is the gRPC status of those failures; zero means
	// connect.CodeUnavailable, the status a field CRM gives while its API
	// server is unreachable.
	FailDeployCode connect.Code
	// FailDeployInBody answers the failing Deploys with gRPC OK and a
	// StatusCode INTERNAL_ERROR body instead of a gRPC error status.
	FailDeployInBody bool
	// FailDeployAfterApply stores the unit before failing the call, as when
	// a CRM applies the object but the answer is lost; PM must then retry with
	// the same unit id, or it leaks a second runtime.
	FailDeployAfterApply bool
	// FailRate is the fraction in [0,1] of CRM calls (reflection excluded)
	// that fail with UNAVAILABLE, drawn from an RNG seeded with Seed so a run
	// can be replayed.
	FailRate float64
	// Seed seeds the FailRate RNG.
	Seed uint64
	// Hang makes every CRM call (reflection excluded) wait until the client's
	// deadline runs out (or the simulator closes) instead of answering.
	Hang bool
	// NotServing makes both health services report NOT_SERVING and
	// GetEnvHealth report "Unhealthy".
	NotServing bool
	// DisableCrmInfo makes oaas.health.CrmInfoService answer UNIMPLEMENTED,
	// like a CRM that predates it.
	DisableCrmInfo bool
	// DisableOaasHealth makes oaas.health.HealthService answer UNIMPLEMENTED,
	// like a CRM implementation that only serves grpc.health.v1.
	DisableOaasHealth bool

	// ProgressDelay is how long a new runtime stays PENDING.
	ProgressDelay time.Duration
	// ReadyDelay is how long it then stays DEPLOYING before it is RUNNING.
	ReadyDelay time.Duration

	// TLS, when set, serves HTTPS (gRPC over TLS) instead of h2c.
	TLS *TLSConfig
	// Logger receives the simulator's logs; nil discards them.
	Logger *slog.Logger
}

// TLSConfig holds PEM material for serving TLS, and optionally mTLS.
type TLSConfig struct {
	// CertPEM is the server certificate chain.
	CertPEM []byte
	// KeyPEM is the server private key.
	KeyPEM []byte
	// ClientCAPEM, when set, requires every client to present a certificate
	// signed by one of these CAs (mTLS).
	ClientCAPEM []byte
}

// DefaultCRMVersion is the crm_version a first-generation simulator reports
// unless told otherwise.
const DefaultCRMVersion = "crmsim-0.1.0"

// Generation2CRMVersion is the crm_version a second-generation simulator
// reports unless told otherwise: the upstream crate version.
const Generation2CRMVersion = "0.1.0"

// withDefaults returns cfg with its zero values replaced by the documented defaults.
func (cfg Config) withDefaults() Config {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.EnvName == "" {
		cfg.EnvName = "default"
	}
	if cfg.Generation == 0 {
		cfg.Generation = 1
	}
	if cfg.CRMVersion == "" {
		cfg.CRMVersion = DefaultCRMVersion
		if cfg.Generation == 2 {
			cfg.CRMVersion = Generation2CRMVersion
		}
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "oaas"
	}
	if cfg.NodeCount == 0 {
		cfg.NodeCount = 3
	}
	if cfg.FailDeployCode == 0 {
		cfg.FailDeployCode = connect.CodeUnavailable
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReadyNodes != nil {
		ready := min(*cfg.ReadyNodes, cfg.NodeCount)
		cfg.ReadyNodes = &ready
	}
	if cfg.Availability != nil {
		a := *cfg.Availability
		cfg.Availability = &a
	}
	return cfg
}

// validate rejects knob values that cannot describe a cluster.
func (cfg Config) validate() error {
	var errs []error
	if cfg.Generation != 1 && cfg.Generation != 2 {
		errs = append(errs, fmt.Errorf("generation %d is not 1 or 2", cfg.Generation))
	}
	if cfg.FailRate < 0 || cfg.FailRate > 1 {
		errs = append(errs, fmt.Errorf("fail rate %v is outside [0,1]", cfg.FailRate))
	}
	if cfg.Availability != nil && (*cfg.Availability < 0 || *cfg.Availability > 1) {
		errs = append(errs, fmt.Errorf("availability %v is outside [0,1]", *cfg.Availability))
	}
	if cfg.FailFirstDeploys < 0 {
		errs = append(errs, fmt.Errorf("fail-first-deploys %d is negative", cfg.FailFirstDeploys))
	}
	if cfg.Latency < 0 || cfg.ProgressDelay < 0 || cfg.ReadyDelay < 0 {
		errs = append(errs, errors.New("durations must not be negative"))
	}
	if cfg.TLS != nil && (len(cfg.TLS.CertPEM) == 0 || len(cfg.TLS.KeyPEM) == 0) {
		errs = append(errs, errors.New("TLS needs both a certificate and a key"))
	}
	return errors.Join(errs...)
}

// serverTLS builds the listener's TLS configuration; h2 is offered through
// ALPN because gRPC clients refuse HTTP/1.1 over TLS.
func (t *TLSConfig) serverTLS() (*tls.Config, error) {
	cert, err := tls.X509KeyPair(t.CertPEM, t.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("load TLS key pair: %w", err)
	}
	conf := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
	}
	if len(t.ClientCAPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(t.ClientCAPEM) {
			return nil, errors.New("client CA PEM holds no certificate")
		}
		conf.ClientCAs = pool
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return conf, nil
}
