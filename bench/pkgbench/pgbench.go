package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// insertScript is pgbench's single-row INSERT: a random name (as PM's
// creates use), the filtered columns, and the document, sent as parameters
// as PM's store sends them (-M prepared turns :vars into parameters).
const insertScript = `\set r random(1, 9223372036854775806)
INSERT INTO ` + pgbenchTable + ` (name, version, disabled, tags, author, revision, created_at, updated_at, doc)
VALUES ('pgb-' || :r, :version, false, :tags::text[], :author, 1, now(), now(), :doc::jsonb);
`

// selectScript is pgbench's single-row SELECT by primary key of one of the
// n seeded rows, reading what PM's get reads.
const selectScript = `\set i random(1, :n)
SELECT revision, doc FROM ` + pgbenchTable + ` WHERE name = '` + seedPrefix + `' || :i;
`

// pgbench runs pgbench against the scratch database.
type pgbench struct {
	path    string
	version string // its --version line
	url     string
	dir     string // scripts go here
	db      *scratch
}

// pgbenchResult is what a pgbench run reports.
type pgbenchResult struct {
	tps     float64
	latency time.Duration // average
	failed  int
}

// insert runs the INSERT script with clients connections.
func (p *pgbench) insert(ctx context.Context, clients int, warmup, duration time.Duration, doc string) (pgbenchResult, error) {
	return p.run(ctx, "insert", insertScript, clients, warmup, duration,
		"version=0.1.0", "author=platform-team", "tags={demo,stateless}", "doc="+doc)
}

// selectByKey runs the SELECT script over n seeded rows.
func (p *pgbench) selectByKey(ctx context.Context, clients int, warmup, duration time.Duration, n int) (pgbenchResult, error) {
	return p.run(ctx, "select", selectScript, clients, warmup, duration, "n="+strconv.Itoa(n))
}

// run writes script and runs pgbench with it, first for warmup (whole
// seconds, unreported) then for duration rounded up to whole seconds.
func (p *pgbench) run(ctx context.Context, name, script string, clients int, warmup, duration time.Duration, vars ...string) (pgbenchResult, error) {
	file := filepath.Join(p.dir, name+".sql")
	if err := os.WriteFile(file, []byte(script), 0o600); err != nil {
		return pgbenchResult{}, err
	}
	args := []string{"-n", "-f", file, "-c", strconv.Itoa(clients), "-j", strconv.Itoa(min(clients, 2)), "-M", "prepared"}
	for _, v := range vars {
		args = append(args, "-D", v)
	}
	if secs := int(warmup / time.Second); secs > 0 {
		if _, err := p.exec(ctx, append(slices.Clone(args), "-T", strconv.Itoa(secs))); err != nil {
			return pgbenchResult{}, err
		}
	}
	if err := p.db.checkpoint(ctx); err != nil {
		return pgbenchResult{}, err
	}
	secs := int(math.Ceil(duration.Seconds()))
	out, err := p.exec(ctx, append(args, "-T", strconv.Itoa(secs)))
	if err != nil {
		return pgbenchResult{}, err
	}
	res, err := parsePgbench(out)
	if err != nil {
		return res, fmt.Errorf("pgbench %s: %w\n%s", name, err, out)
	}
	if res.failed > 0 {
		return res, fmt.Errorf("pgbench %s: %d transactions failed\n%s", name, res.failed, out)
	}
	return res, nil
}

// exec runs pgbench with args and the scratch database, returning stdout.
func (p *pgbench) exec(ctx context.Context, args []string) (string, error) {
	cmd := exec.CommandContext(ctx, p.path, append(args, p.url)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", fmt.Errorf("%s %s: %w\n%s%s", p.path, strings.Join(redactArgs(args), " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// redactArgs shortens -D doc=... for messages.
func redactArgs(args []string) []string {
	out := slices.Clone(args)
	for i, a := range out {
		if strings.HasPrefix(a, "doc=") && len(a) > 40 {
			out[i] = a[:40] + "..."
		}
	}
	return out
}

var (
	tpsLine     = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
	latencyLine = regexp.MustCompile(`(?m)^latency average = ([0-9.]+) ms`)
	failedLine  = regexp.MustCompile(`(?m)^number of failed transactions: ([0-9]+)`)
)

// parsePgbench reads tps (without initial connection time), average
// latency and failed transactions (PostgreSQL 15+) from pgbench's report.
func parsePgbench(out string) (pgbenchResult, error) {
	var r pgbenchResult
	m := tpsLine.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New("no \"tps = \" line in its output")
	}
	tps, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return r, fmt.Errorf("tps %q: %w", m[1], err)
	}
	r.tps = tps
	m = latencyLine.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New("no \"latency average = \" line in its output")
	}
	lat, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return r, fmt.Errorf("latency %q: %w", m[1], err)
	}
	r.latency = time.Duration(lat * float64(time.Millisecond))
	if m = failedLine.FindStringSubmatch(out); m != nil {
		r.failed, _ = strconv.Atoi(m[1]) // the pattern admits only digits
	}
	return r, nil
}

// findPgbench returns the pgbench to use and its version line: the
// -pgbench flag, else PATH, else the newest /usr/lib/postgresql/*/bin.
func findPgbench(ctx context.Context, flagPath string) (path, version string, err error) {
	var candidates []string
	if flagPath != "" {
		candidates = []string{flagPath}
	} else {
		if p, err := exec.LookPath("pgbench"); err == nil {
			candidates = append(candidates, p)
		}
		found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pgbench") // the pattern is valid
		slices.SortFunc(found, func(a, b string) int { return versionOf(b) - versionOf(a) })
		candidates = append(candidates, found...)
	}
	var errs []error
	for _, c := range candidates {
		vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := exec.CommandContext(vctx, c, "--version").Output()
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s --version: %w", c, err))
			continue
		}
		return c, strings.TrimSpace(string(out)), nil
	}
	if len(errs) > 0 {
		return "", "", fmt.Errorf("%w: %w", errNoPgbench, errors.Join(errs...))
	}
	return "", "", errNoPgbench
}

// versionOf is the major version in /usr/lib/postgresql/<v>/bin/pgbench.
func versionOf(path string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(path))))
	return v
}
