package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/oaas/pm/internal/version"
)

// versionInfo is what pmctl version reports.
type versionInfo struct {
	Client clientVersion  `json:"client"`
	Server *serverVersion `json:"server,omitempty"`
}

type clientVersion struct {
	Version  string `json:"version"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

type serverVersion struct {
	Version string `json:"version"`
	URL     string `json:"url"`
	Status  string `json:"status,omitempty"`
}

func (a *app) versionCommand() *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print pmctl's version and the version of the PM it talks to",
		Args:  cobra.NoArgs,
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			info := versionInfo{Client: clientVersion{
				Version: version.String(), Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH,
			}}
			var serverErr error
			if !clientOnly {
				c, err := a.connect(cmd)
				if err != nil {
					return err
				}
				info.Server, serverErr = c.serverVersion(cmd.Context())
			}
			if a.output != "table" {
				if err := a.printValue(info); err != nil {
					return err
				}
				return serverErr
			}
			_, _ = fmt.Fprintf(a.streams.Out, "Client: %s (%s %s)\n", info.Client.Version, info.Client.Go, info.Client.Platform)
			if s := info.Server; s != nil {
				line := fmt.Sprintf("Server: %s (%s)", s.Version, s.URL)
				if s.Status != "" && s.Status != "healthy" {
					line += ", " + s.Status
				}
				_, _ = fmt.Fprintln(a.streams.Out, line)
			}
			return serverErr
		}),
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print only pmctl's version; do not contact PM")
	return cmd
}

// serverVersion reads PM's version from GET /health (which answers 503
// with the same body when PM is not ready).
func (c *conn) serverVersion(ctx context.Context) (*serverVersion, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/health", nil)
	if err != nil {
		return nil, err
	}
	headers{token: c.token, mode: "Strict"}.set(req.Header)
	req.Header.Del("Field-Validation")
	res, err := c.http.Do(req)
	if err != nil {
		if msg, ok := transportProblem(err); ok {
			return nil, failf(ExitUnavailable, "reading the server version: cannot reach PM at %s: %s", c.base, msg)
		}
		return nil, failf(ExitUnavailable, "reading the server version: %v", err)
	}
	defer func() { _ = res.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return nil, failf(ExitUnavailable, "reading the server version: %v", err)
	}
	var h struct {
		Version string `json:"version"`
		Status  string `json:"status"`
		Error   string `json:"error"`
	}
	if err := json.Unmarshal(body, &h); err != nil || (res.StatusCode != http.StatusOK && res.StatusCode != http.StatusServiceUnavailable) {
		msg := h.Error
		if msg == "" {
			msg = res.Status
		}
		code := ExitError
		switch res.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			msg += " (check --token, PM_TOKEN or the context's token)"
		case http.StatusNotFound:
			code = ExitNotFound
			msg = "no /health at " + c.base + " (is this PM?)"
		}
		return nil, failf(code, "reading the server version: %s", msg)
	}
	v := h.Version
	if v == "" {
		v = "unknown"
	}
	return &serverVersion{Version: v, URL: c.base, Status: h.Status}, nil
}
