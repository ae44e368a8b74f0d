// Package cli implements pmctl, the command-line client of PM. Every command
// talks to PM through the generated Connect clients (gen/go/oaas/pm/v1), so
// the CLI sees exactly what any other Connect client sees.
package cli

import (
	"context"
	"errors"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
)

// Streams are the standard streams of one pmctl invocation.
type Streams struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
}

// Env is what pmctl reads from its surroundings; tests give their own so
// they can run in parallel without touching the process environment.
type Env struct {
	// Getenv reads an environment variable ("" when unset).
	Getenv func(string) string
	// HomeDir returns the user's home directory, under which the default
	// config file lives.
	HomeDir func() (string, error)
}

// OSEnv is the process environment.
func OSEnv() Env { return Env{Getenv: os.Getenv, HomeDir: os.UserHomeDir} }

// Run runs pmctl with args (without the program name). The error, if any,
// carries the exit code (see ExitCode) and a message for Report.
func Run(ctx context.Context, args []string, s Streams, env Env) error {
	a := newApp(s, env)
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(s.In)
	root.SetOut(s.Out)
	root.SetErr(s.Err)
	_, err := root.ExecuteContextC(ctx)
	if err != nil && !a.entered {
		// cobra failed before any command ran: unknown command or flag,
		// wrong arguments, a missing required flag.
		var ee *exitError
		if !errors.As(err, &ee) {
			err = usageErr("%s", err.Error())
		}
	}
	return err
}

// app is one invocation's state, shared by its commands.
type app struct {
	streams Streams
	env     Env
	// entered is set once a command's own code starts: errors before that
	// are usage errors.
	entered bool

	// Global flags.
	server, token, caFile, contextName, configPath string
	insecure                                       bool
	output                                         string
	requestTimeout                                 time.Duration
	validate                                       string

	conn *conn
}

func newApp(s Streams, env Env) *app {
	if s.In == nil {
		s.In = eofReader{}
	}
	if s.Out == nil {
		s.Out = io.Discard
	}
	if s.Err == nil {
		s.Err = io.Discard
	}
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	if env.HomeDir == nil {
		env.HomeDir = func() (string, error) { return "", errors.New("no home directory") }
	}
	return &app{streams: s, env: env}
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

const rootLong = `pmctl drives the OaaS Package Manager (PM): it applies packages and
deployments, shows what PM knows (packages, deployments, clusters, runtimes,
operations, orphans) and follows rollouts cluster by cluster.

Where PM is, in order of precedence:
  --server / --token / --ca-file / --insecure-skip-verify flags,
  PM_SERVER / PM_TOKEN environment variables,
  the current context of the config file ($PMCTL_CONFIG, else
  ~/.config/pmctl/config.yaml; see "pmctl config"),
  else http://localhost:8080 without a token.
The token is sent as "Authorization: Bearer <token>" and never printed.

Exit codes:
  0  success
  1  error (bad input rejected by PM, failed rollout, anything else)
  2  usage error (unknown command or flag, wrong arguments)
  3  not found
  4  conflict (already exists, stale revision, operation in progress)
  5  PM unavailable or unreachable, or a request timed out`

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "pmctl",
		Short:         "Command-line client of the OaaS Package Manager",
		Long:          rootLong,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageErr("%s (see '%s --help')", err.Error(), c.CommandPath())
	})
	pf := root.PersistentFlags()
	pf.StringVar(&a.server, "server", "", "PM URL, e.g. https://pm.example:8080 (env PM_SERVER)")
	pf.StringVar(&a.token, "token", "", "bearer token (env PM_TOKEN; prefer the variable, flags show in ps)")
	pf.StringVar(&a.caFile, "ca-file", "", "PEM file of CAs that sign PM's TLS certificate")
	pf.BoolVar(&a.insecure, "insecure-skip-verify", false, "do not verify PM's TLS certificate (testing only)")
	pf.StringVar(&a.contextName, "context", "", "config context to use instead of the current one")
	pf.StringVar(&a.configPath, "config", "", "config file (default $PMCTL_CONFIG, else ~/.config/pmctl/config.yaml)")
	pf.StringVarP(&a.output, "output", "o", "table", "output format: table, json or yaml")
	pf.DurationVar(&a.requestTimeout, "request-timeout", 60*time.Second, "timeout of each request to PM")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))

	root.AddCommand(
		a.applyCommand(),
		a.getCommand(),
		a.describeCommand(),
		a.deleteCommand(),
		a.deployCommand(),
		a.statusCommand(),
		a.rollbackCommand(),
		a.watchCommand(),
		a.versionCommand(),
		a.configCommand(),
	)
	return root
}

// run wraps a command's body: it marks the invocation as past usage
// checking and validates the global output flag.
func (a *app) run(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		a.entered = true
		switch a.output {
		case "table", "json", "yaml":
		default:
			return usageErr("--output %q is not one of table, json, yaml", a.output)
		}
		return fn(cmd, args)
	}
}

// progress is where rollout progress goes: stdout for people, stderr when
// stdout carries JSON or YAML for a program.
func (a *app) progress() io.Writer {
	if a.output == "table" {
		return a.streams.Out
	}
	return a.streams.Err
}
