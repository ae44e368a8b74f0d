package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/oaas/pm/internal/crmsim"
)

// run parses the flags, serves the simulators until ctx ends, then closes them
// (each Close is bounded, so shutdown cannot hang).
func run(ctx context.Context, args []string, getenv func(string) string, logOut io.Writer) error {
	opts, err := parseOptions(args, getenv, logOut)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: opts.logLevel}))
	cfgs, err := opts.configs(logger)
	if err != nil {
		return err
	}
	sims, err := crmsim.StartMany(context.WithoutCancel(ctx), cfgs)
	if err != nil {
		return err
	}
	for _, s := range sims {
		logger.Info("simulated CRM ready", slog.String("env", s.EnvName()), slog.String("url", s.URL()))
	}
	<-ctx.Done()
	logger.Info("shutting down", slog.Int("clusters", len(sims)))
	var errs []error
	for _, s := range sims {
		if err := s.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", s.EnvName(), err))
		}
	}
	return errors.Join(errs...)
}

// cluster is one --cluster name=addr[@generation]; generation 0 takes
// --generation.
type cluster struct {
	name, addr string
	generation int
}

// options are the parsed flags; knobs is shared by every cluster.
type options struct {
	listen     string
	env        string
	clusters   []cluster
	knobs      crmsim.Config
	readyNodes string
	avail      string
	failCode   string
	tlsCert    string
	tlsKey     string
	clientCA   string
	logLevel   slog.Level
}

// clusterFlag collects repeated --cluster values.
type clusterFlag struct{ list *[]cluster }

// String implements flag.Value.
func (f clusterFlag) String() string {
	if f.list == nil {
		return ""
	}
	parts := make([]string, len(*f.list))
	for i, c := range *f.list {
		parts[i] = c.name + "=" + c.addr
		if c.generation != 0 {
			parts[i] += "@" + strconv.Itoa(c.generation)
		}
	}
	return strings.Join(parts, ",")
}

// Set accepts "name=host:port", optionally with "@1" or "@2" for the CRM
// generation that cluster plays, or several separated by commas (the form
// the CRMSIM_CLUSTER variable takes).
func (f clusterFlag) Set(v string) error {
	for item := range strings.SplitSeq(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, addr, ok := strings.Cut(item, "=")
		if !ok || name == "" || addr == "" {
			return fmt.Errorf("cluster %q: want name=host:port[@generation]", item)
		}
		c := cluster{name: name, addr: addr}
		if a, gen, ok := strings.Cut(addr, "@"); ok {
			n, err := parseGeneration(gen)
			if err != nil {
				return fmt.Errorf("cluster %q: %w", item, err)
			}
			c.addr, c.generation = a, n
		}
		if _, _, err := net.SplitHostPort(c.addr); err != nil {
			return fmt.Errorf("cluster %q: %w", item, err)
		}
		*f.list = append(*f.list, c)
	}
	return nil
}

// parseGeneration reads a CRM generation, 1 or 2.
func parseGeneration(v string) (int, error) {
	switch strings.TrimSpace(v) {
	case "1":
		return 1, nil
	case "2":
		return 2, nil
	}
	return 0, fmt.Errorf("generation %q is not 1 or 2", v)
}

// parseOptions reads flags, falling back to CRMSIM_* variables for flags not
// given on the command line.
func parseOptions(args []string, getenv func(string) string, out io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("crmsim", flag.ContinueOnError)
	fs.SetOutput(out)
	k := &o.knobs
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8088", "listen address of the single simulated CRM")
	fs.StringVar(&o.env, "env", "default", "environment name of the single simulated CRM")
	fs.Var(clusterFlag{&o.clusters}, "cluster", "serve a simulated CRM named `name=host:port[@generation]` (repeatable; replaces --listen/--env)")
	fs.Func("generation", "CRM wire generation to play: 1 (crm-wire-contract.md) or 2 (current upstream: runtime summaries, TopologyService) (default 1)", func(v string) error {
		n, err := parseGeneration(v)
		k.Generation = n
		return err
	})
	fs.Func("nodes", "node count of each cluster (default 3)", func(v string) error {
		n, err := strconv.ParseUint(v, 10, 32)
		k.NodeCount = uint32(n)
		return err
	})
	fs.StringVar(&o.readyNodes, "ready-nodes", "", "ready nodes (empty: all)")
	fs.StringVar(&o.avail, "availability", "", "availability forced by the operator, in [0,1] (empty: absent)")
	fs.DurationVar(&k.Latency, "latency", 0, "delay added to every call")
	fs.IntVar(&k.FailFirstDeploys, "fail-first-deploys", 0, "fail the first N Deploy calls")
	fs.StringVar(&o.failCode, "fail-deploy-code", "unavailable", "gRPC code of those failures (e.g. unavailable, internal)")
	fs.BoolVar(&k.FailDeployInBody, "fail-deploy-in-body", false, "fail them with gRPC OK and an INTERNAL_ERROR body instead")
	fs.BoolVar(&k.FailDeployAfterApply, "fail-deploy-after-apply", false, "store the unit before failing (a lost answer)")
	fs.Float64Var(&k.FailRate, "fail-rate", 0, "fraction of calls failing with UNAVAILABLE")
	fs.Uint64Var(&k.Seed, "seed", 1, "seed of the fail-rate RNG (cluster i uses seed+i)")
	fs.BoolVar(&k.Hang, "hang", false, "never answer until the client's deadline")
	fs.BoolVar(&k.NotServing, "not-serving", false, "report NOT_SERVING / Unhealthy")
	fs.BoolVar(&k.DisableCrmInfo, "disable-crm-info", false, "answer CrmInfoService with UNIMPLEMENTED")
	fs.BoolVar(&k.DisableOaasHealth, "disable-oaas-health", false, "answer oaas.health.HealthService with UNIMPLEMENTED")
	fs.BoolVar(&k.StrictEnv, "strict-env", false, "answer GetEnvHealth for another env with NOT_FOUND")
	fs.DurationVar(&k.ProgressDelay, "progress-delay", 2*time.Second, "how long a new runtime stays PENDING")
	fs.DurationVar(&k.ReadyDelay, "ready-delay", 3*time.Second, "how long it then stays DEPLOYING")
	fs.StringVar(&k.Namespace, "namespace", "oaas", "namespace of the simulated Kubernetes objects")
	fs.StringVar(&k.CRMVersion, "crm-version", "", "crm_version to report (default "+crmsim.DefaultCRMVersion+", or "+crmsim.Generation2CRMVersion+" for generation 2)")
	fs.BoolVar(&k.OmitCRMVersion, "omit-crm-version", false, "report no crm_version, as first-generation field CRMs")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "serve TLS with this PEM certificate")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM private key for --tls-cert")
	fs.StringVar(&o.clientCA, "client-ca", "", "require client certificates signed by this PEM CA (mTLS)")
	fs.TextVar(&o.logLevel, "log-level", slog.LevelInfo, "debug, info, warn or error")

	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := "CRMSIM_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" && !given[f.Name] {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = errors.Join(envErr, fmt.Errorf("%s: %w", name, err))
			}
		}
	})
	return o, envErr
}

// configs turns the options into one simulator config per cluster.
func (o *options) configs(logger *slog.Logger) ([]crmsim.Config, error) {
	base := o.knobs
	base.Logger = logger
	if o.readyNodes != "" {
		n, err := strconv.ParseUint(o.readyNodes, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--ready-nodes: %w", err)
		}
		base.ReadyNodes = new(uint32(n))
	}
	if o.avail != "" {
		a, err := strconv.ParseFloat(o.avail, 64)
		if err != nil {
			return nil, fmt.Errorf("--availability: %w", err)
		}
		base.Availability = &a
	}
	if err := base.FailDeployCode.UnmarshalText([]byte(strings.ToLower(o.failCode))); err != nil {
		return nil, fmt.Errorf("--fail-deploy-code: %w", err)
	}
	if base.FailDeployCode == connect.Code(0) {
		return nil, errors.New("--fail-deploy-code: a failure needs a non-OK code")
	}
	tlsConf, err := o.tls()
	if err != nil {
		return nil, err
	}
	base.TLS = tlsConf

	clusters := o.clusters
	if len(clusters) == 0 {
		clusters = []cluster{{name: o.env, addr: o.listen}}
	}
	seen := map[string]bool{}
	cfgs := make([]crmsim.Config, 0, len(clusters))
	for i, c := range clusters {
		if seen[c.name] {
			return nil, fmt.Errorf("cluster %q is given twice", c.name)
		}
		seen[c.name] = true
		cfg := base
		cfg.EnvName, cfg.Addr = c.name, c.addr
		if c.generation != 0 {
			cfg.Generation = c.generation
		}
		cfg.Seed = base.Seed + uint64(i)
		cfgs = append(cfgs, cfg)
	}
	return cfgs, nil
}

// tls reads the PEM files named by the TLS flags.
func (o *options) tls() (*crmsim.TLSConfig, error) {
	if o.tlsCert == "" && o.tlsKey == "" {
		if o.clientCA != "" {
			return nil, errors.New("--client-ca needs --tls-cert and --tls-key")
		}
		return nil, nil
	}
	if o.tlsCert == "" || o.tlsKey == "" {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	t := &crmsim.TLSConfig{}
	var err error
	if t.CertPEM, err = os.ReadFile(o.tlsCert); err != nil {
		return nil, err
	}
	if t.KeyPEM, err = os.ReadFile(o.tlsKey); err != nil {
		return nil, err
	}
	if o.clientCA != "" {
		if t.ClientCAPEM, err = os.ReadFile(o.clientCA); err != nil {
			return nil, err
		}
	}
	return t, nil
}
