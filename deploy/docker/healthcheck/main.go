// Command healthcheck probes PM's /readyz from inside its container, for
// Docker and compose healthchecks: the image is distroless and has no curl
// or wget. It exits 0 when the probe answers 2xx, 1 otherwise.
//
//	healthcheck                 # PM in this container, from its own SERVER_* variables
//	healthcheck -path /livez
//	healthcheck -url http://127.0.0.1:8080/readyz
//
// Without -url the address comes from the variables PM itself reads:
// SERVER_PORT (default 8080), SERVER_HOST when it names one address, and
// https when SERVER_TLS_CERT_FILE is set. Kubernetes does not need this: its
// probes are httpGet.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
}

func run(args []string, getenv func(string) string) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	rawURL := fs.String("url", "", "URL to GET (default: PM in this container, from SERVER_* variables)")
	path := fs.String("path", "/readyz", "path to probe when -url is not given")
	timeout := fs.Duration("timeout", 3*time.Second, "deadline of the probe")
	if err := fs.Parse(args); err != nil {
		return err
	}
	target := *rawURL
	if target == "" {
		target = localURL(getenv, *path)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	// PM's certificate names its service, not 127.0.0.1, and the probe
	// sends nothing secret, so it does not verify the server.
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback probe, no credentials sent
		ForceAttemptHTTP2: true,
	}}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s: %s %s", target, resp.Status, body)
	}
	return nil
}

// localURL is the address PM listens on according to the same variables PM
// reads; a wildcard host is probed on loopback.
func localURL(getenv func(string) string, path string) string {
	host := getenv("SERVER_HOST")
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	port := getenv("SERVER_PORT")
	if port == "" {
		port = "8080"
	}
	scheme := "http"
	if getenv("SERVER_TLS_CERT_FILE") != "" {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + path
}
