// Package deploy holds the packaging files' checks: the Dockerfile and
// compose.yaml at the repository root cannot be built or started on a machine
// without a container engine, so these tests read them and assert what must
// hold for them to work (sources in the build context, static non-root
// binaries, services wired to each other).
package deploy

import (
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// root is the repository root, relative to this package.
const root = ".."

// instruction is one Dockerfile instruction with continuation lines joined
// and heredoc bodies attached.
type instruction struct {
	cmd     string // upper-cased: FROM, RUN, COPY, ...
	args    string
	heredoc string
	line    int
}

// stage is the instructions from one FROM to the next.
type stage struct {
	from  string // the FROM arguments
	insts []instruction
}

// parseDockerfile reads the subset of Dockerfile syntax this repository
// uses: comments, backslash continuations and <<WORD heredocs.
func parseDockerfile(t *testing.T, text string) (globalArgs []instruction, stages []stage) {
	t.Helper()
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		start := i + 1
		for strings.HasSuffix(line, `\`) && i+1 < len(lines) {
			i++
			next := strings.TrimSpace(lines[i])
			if strings.HasPrefix(next, "#") {
				continue
			}
			line = strings.TrimSuffix(line, `\`) + " " + next
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start}
		if m := regexp.MustCompile(`<<-?"?([A-Z]+)"?`).FindStringSubmatch(in.args); m != nil {
			var body []string
			for i++; i < len(lines) && strings.TrimSpace(lines[i]) != m[1]; i++ {
				body = append(body, lines[i])
			}
			if i == len(lines) {
				t.Fatalf("Dockerfile:%d: heredoc %s is not closed", start, m[1])
			}
			in.heredoc = strings.Join(body, "\n")
		}
		switch {
		case in.cmd == "FROM":
			stages = append(stages, stage{from: in.args})
		case len(stages) == 0:
			if in.cmd != "ARG" {
				t.Fatalf("Dockerfile:%d: %s before the first FROM", start, in.cmd)
			}
			globalArgs = append(globalArgs, in)
		default:
			stages[len(stages)-1].insts = append(stages[len(stages)-1].insts, in)
		}
	}
	return globalArgs, stages
}

// argDefault is the default of ARG name among args, or "".
func argDefault(args []instruction, name string) string {
	for _, a := range args {
		for field := range strings.FieldsSeq(a.args) {
			if k, v, ok := strings.Cut(field, "="); ok && k == name {
				return v
			}
		}
	}
	return ""
}

// dockerignored reports whether rel (slash-separated, relative to the
// context) is excluded by the .dockerignore patterns, or lies under an
// excluded directory. The patterns here have no "!" exceptions.
func dockerignored(t *testing.T, patterns []string, rel string) bool {
	t.Helper()
	for _, p := range patterns {
		if strings.HasPrefix(p, "!") {
			t.Fatalf(".dockerignore: exceptions (%q) are not understood by this check; extend it", p)
		}
		p = strings.TrimPrefix(p, "/")
		for prefix := rel; prefix != "." && prefix != "/"; prefix = path.Dir(prefix) {
			if ok, _ := path.Match(p, prefix); ok {
				return true
			}
			if rest, ok := strings.CutPrefix(p, "**/"); ok {
				for sub := prefix; ; {
					if m, _ := path.Match(rest, sub); m {
						return true
					}
					_, after, found := strings.Cut(sub, "/")
					if !found {
						break
					}
					sub = after
				}
			}
		}
	}
	return false
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	globalArgs, stages := parseDockerfile(t, readFile(t, "Dockerfile"))
	var ignore []string
	for line := range strings.SplitSeq(readFile(t, ".dockerignore"), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			ignore = append(ignore, line)
		}
	}
	if len(stages) < 2 {
		t.Fatalf("want a build stage and a runtime stage, got %d stages", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]

	t.Run("the build stage uses go.mod's Go version", func(t *testing.T) {
		t.Parallel()
		m := regexp.MustCompile(`(?m)^go (\d+\.\d+)(\.\d+)?\s*$`).FindStringSubmatch(readFile(t, "go.mod"))
		if m == nil {
			t.Fatal("go.mod has no go directive")
		}
		if got := argDefault(globalArgs, "GO_VERSION"); got != m[1] {
			t.Errorf("ARG GO_VERSION=%s, go.mod says go %s%s: use %s", got, m[1], m[2], m[1])
		}
		if !strings.Contains(build.from, "golang:${GO_VERSION}") {
			t.Errorf("build stage FROM %q, want the official golang:${GO_VERSION} image", build.from)
		}
	})

	t.Run("every COPY source is in the build context", func(t *testing.T) {
		t.Parallel()
		for _, st := range stages {
			for _, in := range st.insts {
				if (in.cmd != "COPY" && in.cmd != "ADD") || strings.Contains(in.args, "--from=") {
					continue
				}
				fields := strings.Fields(in.args)
				var srcs []string
				for _, f := range fields[:len(fields)-1] {
					if !strings.HasPrefix(f, "--") {
						srcs = append(srcs, f)
					}
				}
				for _, src := range srcs {
					if src == "." {
						continue
					}
					if _, err := os.Stat(filepath.Join(root, src)); err != nil {
						t.Errorf("Dockerfile:%d: COPY source %q: %v", in.line, src, err)
					}
					if dockerignored(t, ignore, path.Clean(src)) {
						t.Errorf("Dockerfile:%d: COPY source %q is excluded by .dockerignore", in.line, src)
					}
				}
			}
		}
	})

	t.Run("static binaries from packages in the context", func(t *testing.T) {
		t.Parallel()
		var env, script string
		for _, in := range build.insts {
			switch in.cmd {
			case "ENV":
				env += " " + in.args
			case "RUN":
				script += in.args + "\n" + in.heredoc + "\n"
			}
		}
		if !strings.Contains(env, "CGO_ENABLED=0") {
			t.Errorf("build stage ENV %q: want CGO_ENABLED=0 (the runtime image has no libc)", env)
		}
		if !strings.Contains(script, "-X github.com/oaas/pm/internal/version.Version=${VERSION}") {
			t.Error("go build does not set internal/version.Version from the VERSION build arg")
		}
		if !regexp.MustCompile(`(?m)^var Version = `).MatchString(readFile(t, "internal/version/version.go")) {
			t.Error("internal/version has no `var Version` for -ldflags -X to set")
		}
		pkgs := regexp.MustCompile(`\./(?:cmd|deploy)/[a-z/]+`).FindAllString(script, -1)
		for _, want := range []string{"./cmd/pm", "./cmd/crmsim", "./cmd/pmctl", "./deploy/docker/healthcheck"} {
			if !slices.Contains(pkgs, want) {
				t.Errorf("the build does not build %s", want)
			}
		}
		for _, p := range pkgs {
			_, err := os.Stat(filepath.Join(root, p))
			switch {
			case err != nil && p != "./cmd/pmctl": // pmctl is built only when present
				t.Errorf("the build names %s: %v", p, err)
			case err == nil && dockerignored(t, ignore, strings.TrimPrefix(p, "./")):
				t.Errorf("the build names %s, which .dockerignore excludes", p)
			}
		}
		for _, dir := range []string{"go.mod", "go.sum", "cmd", "internal", "gen", "migrations"} {
			if dockerignored(t, ignore, dir) {
				t.Errorf(".dockerignore excludes %s, which the build needs", dir)
			}
		}
	})

	t.Run("the runtime stage runs /pm as a non-root user", func(t *testing.T) {
		t.Parallel()
		var user, entrypoint string
		exposed := map[string]bool{}
		labels := ""
		for _, in := range final.insts {
			switch in.cmd {
			case "USER":
				user = in.args
			case "ENTRYPOINT":
				entrypoint = in.args
			case "EXPOSE":
				for p := range strings.FieldsSeq(in.args) {
					exposed[p] = true
				}
			case "LABEL":
				labels += " " + in.args
			case "RUN":
				t.Errorf("Dockerfile:%d: RUN in the runtime stage (it has no shell)", in.line)
			}
		}
		uid, _, _ := strings.Cut(user, ":")
		if n, err := strconv.Atoi(uid); err != nil || n == 0 {
			t.Errorf("USER %q: want a numeric non-root UID, so runAsNonRoot can verify it", user)
		}
		var argv []string
		if err := json.Unmarshal([]byte(entrypoint), &argv); err != nil || !slices.Equal(argv, []string{"/pm"}) {
			t.Errorf(`ENTRYPOINT %s: want ["/pm"] (exec form)`, entrypoint)
		}
		for _, p := range []string{"8080", "9090"} {
			if !exposed[p] {
				t.Errorf("port %s is not EXPOSEd", p)
			}
		}
		for _, l := range []string{"title", "source", "licenses", "version", "revision"} {
			if !strings.Contains(labels, "org.opencontainers.image."+l+"=") {
				t.Errorf("no org.opencontainers.image.%s label", l)
			}
		}
		if strings.Contains(final.from, "golang") {
			t.Errorf("runtime stage FROM %s: want a minimal image", final.from)
		}
		if base := argDefault(globalArgs, "RUNTIME_IMAGE"); final.from == "${RUNTIME_IMAGE}" && !strings.Contains(base, "distroless/static") {
			t.Errorf("RUNTIME_IMAGE=%s: want distroless/static", base)
		}
	})
}

// composeFile is the part of compose.yaml the checks read.
type composeFile struct {
	Services map[string]struct {
		Image       string         `json:"image"`
		Build       map[string]any `json:"build"`
		Entrypoint  []string       `json:"entrypoint"`
		Command     []string       `json:"command"`
		Environment map[string]any `json:"environment"`
		Ports       []string       `json:"ports"`
		DependsOn   map[string]struct {
			Condition string `json:"condition"`
		} `json:"depends_on"`
		Healthcheck *struct {
			Test []string `json:"test"`
		} `json:"healthcheck"`
	} `json:"services"`
}

func TestCompose(t *testing.T) {
	t.Parallel()
	var c composeFile
	if err := yaml.Unmarshal([]byte(readFile(t, "compose.yaml")), &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}

	pg, ok := c.Services["postgres"]
	if !ok {
		t.Fatal("no postgres service")
	}
	if !strings.HasPrefix(pg.Image, "postgres:15") {
		t.Errorf("postgres image %q, want postgres:15", pg.Image)
	}
	if pg.Healthcheck == nil || !slices.Contains(pg.Healthcheck.Test, "pg_isready") {
		t.Error("postgres has no pg_isready healthcheck")
	}

	pm, ok := c.Services["pm"]
	if !ok {
		t.Fatal("no pm service")
	}
	env := func(k string) string { return strings.TrimSpace(toString(pm.Environment[k])) }
	if env("STORAGE_TYPE") != "postgres" || !strings.Contains(env("DATABASE_URL"), "@postgres:5432/") {
		t.Errorf("pm: STORAGE_TYPE=%q DATABASE_URL=%q, want postgres on the postgres service", env("STORAGE_TYPE"), env("DATABASE_URL"))
	}
	if env("AUTH_MODE") != "none" && env("AUTH_TOKENS_FILE") == "" {
		t.Error("pm listens beyond loopback: it needs AUTH_MODE=none or AUTH_TOKENS_FILE, or it refuses to start")
	}
	if pm.DependsOn["postgres"].Condition != "service_healthy" {
		t.Errorf("pm depends on postgres with %q, want service_healthy", pm.DependsOn["postgres"].Condition)
	}
	if pm.Healthcheck == nil || !slices.Contains(pm.Healthcheck.Test, "/readyz") {
		t.Error("pm has no healthcheck on /readyz")
	}
	if pm.Build == nil || pm.Build["context"] != "." {
		t.Errorf("pm build %v: want this repository's Dockerfile", pm.Build)
	}
	for _, p := range []string{"8080:8080", "9090:9090"} {
		if !slices.Contains(pm.Ports, p) {
			t.Errorf("pm does not publish %s", p)
		}
	}

	// Every CRM_CLUSTERS entry must reach a crmsim service serving that
	// cluster name on that port.
	clusters := strings.Split(env("CRM_CLUSTERS"), ",")
	if len(clusters) != 2 {
		t.Fatalf("CRM_CLUSTERS=%q: want two simulated clusters", env("CRM_CLUSTERS"))
	}
	re := regexp.MustCompile(`^([a-z0-9-]+)=http://([a-z0-9-]+):(\d+)$`)
	for _, entry := range clusters {
		m := re.FindStringSubmatch(strings.TrimSpace(entry))
		if m == nil {
			t.Errorf("CRM_CLUSTERS entry %q is not name=http://service:port", entry)
			continue
		}
		name, host, port := m[1], m[2], m[3]
		crm, ok := c.Services[host]
		if !ok {
			t.Errorf("CRM_CLUSTERS %s points at %s, which is not a service", name, host)
			continue
		}
		if !slices.Equal(crm.Entrypoint, []string{"/crmsim"}) {
			t.Errorf("service %s runs %v, want /crmsim", host, crm.Entrypoint)
		}
		if i := slices.Index(crm.Command, "--cluster"); i < 0 || i+1 >= len(crm.Command) || crm.Command[i+1] != name+"=0.0.0.0:"+port {
			t.Errorf("service %s command %v: want --cluster %s=0.0.0.0:%s", host, crm.Command, name, port)
		}
		if _, ok := pm.DependsOn[host]; !ok {
			t.Errorf("pm does not depend on %s", host)
		}
	}
}

func toString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}
