package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// Config is pmctl's config file: named contexts, each a PM to talk to.
type Config struct {
	CurrentContext string          `json:"current-context,omitempty"`
	Contexts       []ConfigContext `json:"contexts,omitempty"`
}

// ConfigContext is one PM: its URL and how to authenticate to it.
type ConfigContext struct {
	Name               string `json:"name"`
	Server             string `json:"server,omitempty"`
	Token              string `json:"token,omitempty"`
	CAFile             string `json:"ca_file,omitempty"`
	InsecureSkipVerify bool   `json:"insecure_skip_verify,omitempty"`
}

func (c *Config) find(name string) *ConfigContext {
	for i := range c.Contexts {
		if c.Contexts[i].Name == name {
			return &c.Contexts[i]
		}
	}
	return nil
}

// configFile is where the config lives: --config, $PMCTL_CONFIG, else
// $XDG_CONFIG_HOME/pmctl/config.yaml or ~/.config/pmctl/config.yaml.
func (a *app) configFile() (string, error) {
	if a.configPath != "" {
		return a.configPath, nil
	}
	if p := a.env.Getenv("PMCTL_CONFIG"); p != "" {
		return p, nil
	}
	if x := a.env.Getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "pmctl", "config.yaml"), nil
	}
	home, err := a.env.HomeDir()
	if err != nil || home == "" {
		return "", failf(ExitError, "cannot find the home directory for the config file; set PMCTL_CONFIG")
	}
	return filepath.Join(home, ".config", "pmctl", "config.yaml"), nil
}

// loadConfig reads the config file; a missing file is an empty config.
func (a *app) loadConfig() (*Config, string, error) {
	path, err := a.configFile()
	if err != nil {
		return nil, "", err
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Config{}, path, nil
	}
	if err != nil {
		return nil, path, failf(ExitError, "reading config %s: %v", path, unwrapPath(err))
	}
	var c Config
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, path, failf(ExitError, "config %s is not valid: %s", path, cleanYAMLError(err))
	}
	seen := map[string]bool{}
	for _, ctx := range c.Contexts {
		if ctx.Name == "" {
			return nil, path, failf(ExitError, "config %s: a context has no name", path)
		}
		if seen[ctx.Name] {
			return nil, path, failf(ExitError, "config %s: context %q is defined twice", path, ctx.Name)
		}
		seen[ctx.Name] = true
	}
	return &c, path, nil
}

// saveConfig writes the config readable by its owner only: it holds tokens.
func saveConfig(path string, c *Config) error {
	data, err := yaml.Marshal(c)
	if err != nil {
		return failf(ExitError, "encoding config: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return failf(ExitError, "creating %s: %v", filepath.Dir(path), unwrapPath(err))
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config-*.yaml")
	if err != nil {
		return failf(ExitError, "writing config %s: %v", path, unwrapPath(err))
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return failf(ExitError, "writing config %s: %v", path, unwrapPath(err))
	}
	if err := tmp.Close(); err != nil {
		return failf(ExitError, "writing config %s: %v", path, unwrapPath(err))
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		return failf(ExitError, "writing config %s: %v", path, unwrapPath(err))
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return failf(ExitError, "writing config %s: %v", path, unwrapPath(err))
	}
	return nil
}

// unwrapPath drops the path an fs error repeats.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// target is where to connect, resolved from flags, environment and config.
type target struct {
	server, token, caFile string
	insecure              bool
}

const defaultServer = "http://localhost:8080"

// resolve applies the precedence documented in pmctl --help.
func (a *app) resolve(cmd *cobra.Command) (target, error) {
	var t target
	cfg, path, err := a.loadConfig()
	if err != nil {
		return t, err
	}
	name := cfg.CurrentContext
	if a.contextName != "" {
		name = a.contextName
	}
	if name != "" {
		ctx := cfg.find(name)
		switch {
		case ctx != nil:
			t = target{server: ctx.Server, token: ctx.Token, caFile: ctx.CAFile, insecure: ctx.InsecureSkipVerify}
		case a.contextName != "":
			return t, failf(ExitNotFound, "context %q is not in %s", name, path)
		default:
			return t, failf(ExitError, "current context %q is not in %s (pmctl config use-context NAME)", name, path)
		}
	}
	if v := a.env.Getenv("PM_SERVER"); v != "" {
		t.server = v
	}
	if v := a.env.Getenv("PM_TOKEN"); v != "" {
		t.token = v
	}
	flags := cmd.Flags()
	if flags.Changed("server") {
		t.server = a.server
	}
	if flags.Changed("token") {
		t.token = a.token
	}
	if flags.Changed("ca-file") {
		t.caFile = a.caFile
	}
	if flags.Changed("insecure-skip-verify") {
		t.insecure = a.insecure
	}
	if t.server == "" {
		t.server = defaultServer
	}
	return t, nil
}

func (a *app) configCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Manage the contexts of the config file (PMs pmctl can talk to)",
		Long: `Manage the contexts of pmctl's config file ($PMCTL_CONFIG, else
~/.config/pmctl/config.yaml):

  current-context: dev
  contexts:
    - name: dev
      server: https://pm.dev.example:8080
      token: ...            # sent as Authorization: Bearer; never printed
      ca_file: /etc/pm/ca.pem`,
	}
	var use bool
	setCmd := &cobra.Command{
		Use:   "set-context NAME [--server URL] [--token T] [--ca-file F]",
		Short: "Create or change a context (only the given fields change)",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			cfg, path, err := a.loadConfig()
			if err != nil {
				return err
			}
			ctx := cfg.find(args[0])
			verb := "modified"
			if ctx == nil {
				cfg.Contexts = append(cfg.Contexts, ConfigContext{Name: args[0]})
				ctx = &cfg.Contexts[len(cfg.Contexts)-1]
				verb = "created"
			}
			f := cmd.Flags()
			if f.Changed("server") {
				ctx.Server = a.server
			}
			if f.Changed("token") {
				ctx.Token = a.token
			}
			if f.Changed("ca-file") {
				ctx.CAFile = a.caFile
			}
			if f.Changed("insecure-skip-verify") {
				ctx.InsecureSkipVerify = a.insecure
			}
			if use || cfg.CurrentContext == "" {
				cfg.CurrentContext = args[0]
			}
			if err := saveConfig(path, cfg); err != nil {
				return err
			}
			_, err = fmt.Fprintf(a.streams.Out, "context %q %s in %s\n", args[0], verb, path)
			return err
		}),
	}
	setCmd.Flags().BoolVar(&use, "use", false, "also make it the current context")

	useCmd := &cobra.Command{
		Use:   "use-context NAME",
		Short: "Make NAME the current context",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(_ *cobra.Command, args []string) error {
			cfg, path, err := a.loadConfig()
			if err != nil {
				return err
			}
			if cfg.find(args[0]) == nil {
				return failf(ExitNotFound, "context %q is not in %s", args[0], path)
			}
			cfg.CurrentContext = args[0]
			if err := saveConfig(path, cfg); err != nil {
				return err
			}
			_, err = fmt.Fprintf(a.streams.Out, "switched to context %q\n", args[0])
			return err
		}),
		ValidArgsFunction: a.completeContexts,
	}

	getCmd := &cobra.Command{
		Use:   "get-contexts",
		Short: "List the contexts (tokens are never shown)",
		Args:  cobra.NoArgs,
		RunE: a.run(func(_ *cobra.Command, _ []string) error {
			cfg, _, err := a.loadConfig()
			if err != nil {
				return err
			}
			if a.output != "table" {
				type row struct {
					Name    string `json:"name"`
					Server  string `json:"server,omitempty"`
					Auth    string `json:"auth"`
					CAFile  string `json:"ca_file,omitempty"`
					Current bool   `json:"current"`
				}
				rows := make([]row, 0, len(cfg.Contexts))
				for _, c := range cfg.Contexts {
					rows = append(rows, row{c.Name, c.Server, authOf(c.Token), c.CAFile, c.Name == cfg.CurrentContext})
				}
				return a.printValue(rows)
			}
			tw := tabwriter.NewWriter(a.streams.Out, 0, 8, 2, ' ', 0)
			_, _ = fmt.Fprintln(tw, "CURRENT\tNAME\tSERVER\tAUTH\tCA FILE")
			for _, c := range cfg.Contexts {
				cur := ""
				if c.Name == cfg.CurrentContext {
					cur = "*"
				}
				_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", cur, c.Name, dash(c.Server), authOf(c.Token), dash(c.CAFile))
			}
			return tw.Flush()
		}),
	}

	curCmd := &cobra.Command{
		Use:   "current-context",
		Short: "Print the current context's name",
		Args:  cobra.NoArgs,
		RunE: a.run(func(_ *cobra.Command, _ []string) error {
			cfg, path, err := a.loadConfig()
			if err != nil {
				return err
			}
			if cfg.CurrentContext == "" {
				return failf(ExitNotFound, "no current context in %s", path)
			}
			_, err = fmt.Fprintln(a.streams.Out, cfg.CurrentContext)
			return err
		}),
	}

	cmd.AddCommand(setCmd, useCmd, getCmd, curCmd)
	return cmd
}

func authOf(token string) string {
	if token == "" {
		return "none"
	}
	return "bearer token"
}

func (a *app) completeContexts(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	cfg, _, err := a.loadConfig()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	names := make([]string, 0, len(cfg.Contexts))
	for _, c := range cfg.Contexts {
		names = append(names, c.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}
