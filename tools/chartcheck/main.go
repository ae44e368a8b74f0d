// Command chartcheck renders the oaas-pm Helm chart the way `helm template`
// does, for a set of value profiles, and asserts what an install depends on:
// probes on /livez and /readyz, a non-root read-only container, selectors that
// pick the server pods only, the PodDisruptionBudget, the migration hook Job
// and the DATABASE_AUTO_MIGRATE switch, Secrets that exist where they are
// referenced, and refusals for combinations PM would not start with. Every
// rendered object must decode strictly into its Kubernetes type, so a
// misspelt field fails here rather than at apply time.
//
//	go run ./chartcheck [-env-out DIR] CHART_DIR
//
// With -env-out it also writes, per profile, the environment and files the
// PM container would see (profile.json), for deploy/helm/configcheck to run
// through PM's own configuration loader.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
)

// profile is one set of values and what its render must show.
type profile struct {
	name      string
	valueFile string         // relative to the chart, merged first
	overrides map[string]any // merged over it
	// refusal is a substring of the error the render must fail with.
	refusal string
}

var profiles = []profile{
	{name: "defaults"},
	{name: "full", valueFile: "ci/full-values.yaml"},
	{name: "existing-secrets", valueFile: "ci/full-values.yaml", overrides: map[string]any{
		"database": map[string]any{"url": "", "existingSecret": "pm-db", "existingSecretKey": "dsn"},
		"auth":     map[string]any{"tokensFile": map[string]any{"existingSecret": "pm-tokens", "tokens": []any{}, "clients": []any{}}},
		"tls":      map[string]any{"existingSecret": "pm-tls", "cert": "", "key": "", "ca": ""},
	}},
	{name: "postgres-no-job-no-auth", overrides: map[string]any{
		"replicaCount": 2,
		"storage":      map[string]any{"type": "postgres"},
		"database":     map[string]any{"url": "postgres://pm@db:5432/pm"},
		"migrations":   map[string]any{"job": map[string]any{"enabled": false}},
		"auth":         map[string]any{"disabled": true},
		"metrics":      map[string]any{"enabled": false},
	}},
	{name: "memory with replicas", overrides: map[string]any{"replicaCount": 2}, refusal: "replicaCount"},
	{name: "postgres without a DSN", overrides: map[string]any{"storage": map[string]any{"type": "postgres"}}, refusal: "database.url or database.existingSecret"},
	{name: "no authentication", overrides: map[string]any{"auth": map[string]any{"tokensFile": map[string]any{"enabled": false}}}, refusal: "AUTH_MODE=none"},
	{name: "chart-owned variable in config", overrides: map[string]any{"config": map[string]any{"SERVER_HOST": "127.0.0.1"}}, refusal: "config.SERVER_HOST"},
	{name: "ServiceMonitor on closed metrics", overrides: map[string]any{"serviceMonitor": map[string]any{"enabled": true}}, refusal: "auth.metricsOpen"},
	{name: "TLS without a certificate", overrides: map[string]any{"tls": map[string]any{"enabled": true}}, refusal: "tls.existingSecret"},
	{name: "a token instead of its hash", overrides: map[string]any{"auth": map[string]any{"tokensFile": map[string]any{"tokens": []any{
		map[string]any{"principal": "ci", "role": "deployer", "sha256": "my-secret-token"},
	}}}}, refusal: "sha256"},
	{name: "a number in config", overrides: map[string]any{"config": map[string]any{"DEPLOY_REPLICA_CAP": 50}}, refusal: "DEPLOY_REPLICA_CAP"},
}

func main() {
	envOut := flag.String("env-out", "", "write each profile's container environment and files here")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: chartcheck [-env-out DIR] CHART_DIR")
		os.Exit(2)
	}
	ch, err := loader.Load(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "chartcheck:", err)
		os.Exit(1)
	}
	failed := false
	for _, p := range profiles {
		problems, env := check(ch, flag.Arg(0), p)
		if len(problems) > 0 {
			failed = true
			for _, msg := range problems {
				fmt.Fprintf(os.Stderr, "chartcheck: %s: %s\n", p.name, msg)
			}
			continue
		}
		fmt.Printf("chartcheck: %s: ok\n", p.name)
		if env != nil && *envOut != "" {
			if err := writeEnv(*envOut, p.name, env); err != nil {
				fmt.Fprintln(os.Stderr, "chartcheck:", err)
				failed = true
			}
		}
	}
	if failed {
		os.Exit(1)
	}
}

// rendered is one release's objects by kind and name; hooks included.
type rendered struct {
	objects map[string]map[string][]byte // kind -> name -> YAML
	hooks   map[string][]string          // "Kind/name" -> hook events
	weights map[string]string            // "Kind/name" -> hook weight
	notes   string
}

func (r *rendered) one(kind, name string) ([]byte, bool) {
	b, ok := r.objects[kind][name]
	return b, ok
}

// render runs what `helm template` runs: an install, client-only and dry-run.
func render(ch *chart.Chart, vals map[string]any) (*rendered, error) {
	install := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	install.DryRun, install.ClientOnly, install.Replace = true, true, true
	install.ReleaseName, install.Namespace = "pm", "oaas"
	kv, err := chartutil.ParseKubeVersion("1.31.0")
	if err != nil {
		return nil, err
	}
	install.KubeVersion = kv
	rel, err := install.Run(ch, vals)
	if err != nil {
		return nil, err
	}
	r := &rendered{objects: map[string]map[string][]byte{}, hooks: map[string][]string{}, weights: map[string]string{}}
	if rel.Info != nil {
		r.notes = rel.Info.Notes
	}
	add := func(manifest string, hook bool) error {
		for doc := range strings.SplitSeq(manifest, "\n---") {
			var head struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name        string            `json:"name"`
					Annotations map[string]string `json:"annotations"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				return fmt.Errorf("rendered YAML does not parse: %w\n%s", err, doc)
			}
			if head.Kind == "" {
				continue
			}
			if r.objects[head.Kind] == nil {
				r.objects[head.Kind] = map[string][]byte{}
			}
			if _, dup := r.objects[head.Kind][head.Metadata.Name]; dup {
				return fmt.Errorf("two objects %s/%s", head.Kind, head.Metadata.Name)
			}
			r.objects[head.Kind][head.Metadata.Name] = []byte(doc)
			if hook {
				id := head.Kind + "/" + head.Metadata.Name
				r.hooks[id] = strings.Split(head.Metadata.Annotations["helm.sh/hook"], ",")
				r.weights[id] = head.Metadata.Annotations["helm.sh/hook-weight"]
			}
		}
		return nil
	}
	if err := add(rel.Manifest, false); err != nil {
		return nil, err
	}
	for _, h := range rel.Hooks {
		if err := add(h.Manifest, true); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// decode unmarshals an object strictly: a field its Go type lacks is an
// error, as it would be for kubectl apply --validate=strict.
func decode[T any](r *rendered, kind, name string) (*T, error) {
	b, ok := r.one(kind, name)
	if !ok {
		return nil, fmt.Errorf("no %s %q", kind, name)
	}
	var v T
	if err := yaml.UnmarshalStrict(b, &v); err != nil {
		return nil, fmt.Errorf("%s %q: %w", kind, name, err)
	}
	return &v, nil
}

// containerEnv is what the PM container sees: its environment and the files
// mounted from Secrets the chart rendered.
type containerEnv struct {
	Env   map[string]string `json:"env"`
	Files map[string]string `json:"files"`
}

func values(dir string, p profile) (map[string]any, error) {
	vals := map[string]any{}
	if p.valueFile != "" {
		v, err := chartutil.ReadValuesFile(filepath.Join(dir, p.valueFile))
		if err != nil {
			return nil, err
		}
		vals = v
	}
	merge(vals, p.overrides)
	return vals, nil
}

// merge copies src into dst, recursing into maps.
func merge(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				merge(dm, sm)
				continue
			}
			cp := map[string]any{}
			merge(cp, sm)
			dst[k] = cp
			continue
		}
		dst[k] = v
	}
}

// check renders one profile and returns what is wrong with it.
func check(ch *chart.Chart, dir string, p profile) (problems []string, env *containerEnv) {
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	vals, err := values(dir, p)
	if err != nil {
		return []string{err.Error()}, nil
	}
	r, err := render(ch, vals)
	if p.refusal != "" {
		switch {
		case err == nil:
			bad("rendered, want a refusal naming %q", p.refusal)
		case !strings.Contains(err.Error(), p.refusal):
			bad("refused with %q, want it to name %q", err, p.refusal)
		}
		return problems, nil
	}
	if err != nil {
		return []string{"render: " + err.Error()}, nil
	}
	// The effective values: the chart's defaults under the profile's.
	eff, err := chartutil.CoalesceValues(ch, vals)
	if err != nil {
		return []string{err.Error()}, nil
	}
	v := func(keys ...string) any {
		var cur any = map[string]any(eff)
		for _, k := range keys {
			m, ok := cur.(map[string]any)
			if !ok {
				return nil
			}
			cur = m[k]
		}
		return cur
	}
	truthy := func(keys ...string) bool {
		switch x := v(keys...).(type) {
		case bool:
			return x
		case string:
			return x != ""
		default:
			return x != nil
		}
	}
	postgres := v("storage", "type") == "postgres"
	jobWanted := postgres && truthy("migrations", "job", "enabled")
	tls := truthy("tls", "enabled")

	known := []string{"Deployment", "Service", "ConfigMap", "Secret", "ServiceAccount", "PodDisruptionBudget", "Job", "ServiceMonitor"}
	for kind, objs := range r.objects {
		if !slices.Contains(known, kind) {
			bad("unexpected kind %s", kind)
		}
		for name := range objs {
			var err error
			switch kind {
			case "Deployment":
				_, err = decode[appsv1.Deployment](r, kind, name)
			case "Service":
				_, err = decode[corev1.Service](r, kind, name)
			case "ConfigMap":
				_, err = decode[corev1.ConfigMap](r, kind, name)
			case "Secret":
				_, err = decode[corev1.Secret](r, kind, name)
			case "ServiceAccount":
				_, err = decode[corev1.ServiceAccount](r, kind, name)
			case "PodDisruptionBudget":
				_, err = decode[policyv1.PodDisruptionBudget](r, kind, name)
			case "Job":
				_, err = decode[batchv1.Job](r, kind, name)
			}
			if err != nil {
				bad("%v", err)
			}
		}
	}

	const fullname = "pm-oaas-pm"
	dep, err := decode[appsv1.Deployment](r, "Deployment", fullname)
	if err != nil {
		return append(problems, err.Error()), nil
	}
	pod := dep.Spec.Template.Spec
	podLabels := dep.Spec.Template.Labels
	if len(pod.Containers) != 1 || pod.Containers[0].Name != "pm" {
		return append(problems, "the Deployment does not run one container named pm"), nil
	}
	c := pod.Containers[0]

	// Probes.
	scheme := corev1.URISchemeHTTP
	if tls {
		scheme = corev1.URISchemeHTTPS
	}
	for _, pr := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/livez"}, {"readiness", c.ReadinessProbe, "/readyz"}, {"startup", c.StartupProbe, "/livez"}} {
		switch {
		case pr.probe == nil || pr.probe.HTTPGet == nil:
			bad("no %s httpGet probe", pr.name)
		case pr.probe.HTTPGet.Path != pr.path || pr.probe.HTTPGet.Port.String() != "http" || pr.probe.HTTPGet.Scheme != scheme:
			bad("%s probe %s %s://:%s, want %s on port http over %s", pr.name, pr.probe.HTTPGet.Path, pr.probe.HTTPGet.Scheme, pr.probe.HTTPGet.Port.String(), pr.path, scheme)
		}
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["http"] != 8080 {
		bad("container port http is %d, want 8080", ports["http"])
	}
	if truthy("metrics", "enabled") != (ports["metrics"] == 9090) {
		bad("container port metrics is %d with metrics.enabled=%v", ports["metrics"], truthy("metrics", "enabled"))
	}

	// Non-root, read-only, no capabilities; for the Job too.
	checkSecurity := func(what string, ps corev1.PodSpec) {
		psc := ps.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
			bad("%s: the pod does not run as a non-root UID", what)
		}
		if psc != nil && (psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault) {
			bad("%s: no RuntimeDefault seccomp profile", what)
		}
		if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
			bad("%s: mounts a service account token PM does not use", what)
		}
		for _, ct := range ps.Containers {
			sc := ct.SecurityContext
			switch {
			case sc == nil:
				bad("%s: container %s has no securityContext", what, ct.Name)
			case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
				bad("%s: container %s root filesystem is writable", what, ct.Name)
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
				bad("%s: container %s allows privilege escalation", what, ct.Name)
			case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0:
				bad("%s: container %s does not drop ALL capabilities", what, ct.Name)
			case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
				bad("%s: container %s lacks runAsNonRoot", what, ct.Name)
			}
		}
	}
	checkSecurity("Deployment", pod)
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		bad("the pm container has no CPU request or memory limit")
	}
	for _, k := range []string{"checksum/config", "checksum/database"} {
		if dep.Spec.Template.Annotations[k] == "" {
			bad("pod template has no %s annotation (config changes would not roll the pods)", k)
		}
	}
	if want := int32(toInt(v("replicaCount"))); dep.Spec.Replicas == nil || *dep.Spec.Replicas != want {
		bad("replicas %v, want %d", dep.Spec.Replicas, want)
	}
	if postgres != (dep.Spec.Strategy.Type == appsv1.RollingUpdateDeploymentStrategyType) {
		bad("strategy %s with storage %v (memory must Recreate, postgres roll)", dep.Spec.Strategy.Type, v("storage", "type"))
	}

	// Selectors: Service, PDB and spread pick the server pods and nothing else.
	matches := func(sel, labels map[string]string) bool {
		for k, val := range sel {
			if labels[k] != val {
				return false
			}
		}
		return len(sel) > 0
	}
	if !matches(dep.Spec.Selector.MatchLabels, podLabels) {
		bad("the Deployment's selector does not match its pods")
	}
	svc, err := decode[corev1.Service](r, "Service", fullname)
	if err != nil {
		bad("%v", err)
	} else {
		if !matches(svc.Spec.Selector, podLabels) {
			bad("the Service does not select the server pods")
		}
		sp := map[string]corev1.ServicePort{}
		for _, p := range svc.Spec.Ports {
			sp[p.Name] = p
		}
		if tp := sp["http"].TargetPort; tp.String() != "http" || sp["http"].Port != int32(toInt(v("service", "port"))) {
			bad("Service port http: %+v", sp["http"])
		}
		if _, ok := sp["metrics"]; ok != truthy("metrics", "enabled") {
			bad("Service port metrics present=%v with metrics.enabled=%v", ok, truthy("metrics", "enabled"))
		}
	}
	if truthy("podDisruptionBudget", "enabled") {
		pdb, err := decode[policyv1.PodDisruptionBudget](r, "PodDisruptionBudget", fullname)
		switch {
		case err != nil:
			bad("%v", err)
		case !matches(pdb.Spec.Selector.MatchLabels, podLabels):
			bad("the PodDisruptionBudget does not select the server pods")
		case (pdb.Spec.MinAvailable == nil) == (pdb.Spec.MaxUnavailable == nil):
			bad("the PodDisruptionBudget sets both or neither of minAvailable and maxUnavailable")
		}
	}
	if len(pod.TopologySpreadConstraints) == 0 {
		bad("no topologySpreadConstraints")
	}
	for _, tsc := range pod.TopologySpreadConstraints {
		if tsc.LabelSelector == nil || !matches(tsc.LabelSelector.MatchLabels, podLabels) {
			bad("spread constraint %s does not select the server pods", tsc.TopologyKey)
		}
	}

	// The environment PM will see, and the Secrets behind it.
	cm, err := decode[corev1.ConfigMap](r, "ConfigMap", fullname)
	if err != nil {
		return append(problems, err.Error()), nil
	}
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].ConfigMapRef == nil || c.EnvFrom[0].ConfigMapRef.Name != fullname {
		bad("the container does not take its environment from ConfigMap %s", fullname)
	}
	env = &containerEnv{Env: maps.Clone(cm.Data), Files: map[string]string{}}
	secretData := func(name, key string) (string, bool) {
		s, err := decode[corev1.Secret](r, "Secret", name)
		if err != nil {
			return "", false
		}
		b, ok := s.Data[key]
		return string(b), ok
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env.Env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			val, ok := secretData(ref.Name, ref.Key)
			if !ok {
				if isExisting(v, ref.Name) {
					val = "postgres://placeholder@db.example:5432/pm" // an operator's Secret
				} else {
					bad("env %s: Secret %s has no key %s in the render", e.Name, ref.Name, ref.Key)
				}
			}
			env.Env[e.Name] = val
		}
	}
	if env.Env["SERVER_HOST"] != "0.0.0.0" {
		bad("SERVER_HOST=%q, want 0.0.0.0 in a pod", env.Env["SERVER_HOST"])
	}
	if postgres != (env.Env["DATABASE_URL"] != "") {
		bad("DATABASE_URL set=%v with storage %v", env.Env["DATABASE_URL"] != "", v("storage", "type"))
	}

	mounts := map[string]string{} // mount path -> volume name
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.Name
		if m.SubPath != "" {
			bad("volume %s mounted with subPath: Secret updates would not reach the pod", m.Name)
		}
	}
	volumes := map[string]corev1.Volume{}
	for _, vol := range pod.Volumes {
		volumes[vol.Name] = vol
	}
	// mountedSecret resolves a file path to the Secret and key behind it.
	mountedSecret := func(file string) (secret, key string, ok bool) {
		vol, found := volumes[mounts[path.Dir(file)]]
		if !found || vol.Secret == nil {
			return "", "", false
		}
		key = path.Base(file)
		for _, it := range vol.Secret.Items {
			if it.Path == key {
				key = it.Key
			}
		}
		return vol.Secret.SecretName, key, true
	}
	fileFrom := func(variable string) {
		file := env.Env[variable]
		if file == "" {
			return
		}
		secret, key, ok := mountedSecret(file)
		if !ok {
			bad("%s=%s is not in a mounted Secret", variable, file)
			return
		}
		content, ok := secretData(secret, key)
		switch {
		case ok:
			env.Files[file] = content
		case !isExisting(v, secret):
			bad("%s=%s: Secret %s has no key %s", variable, file, secret, key)
		}
	}
	for _, variable := range []string{"AUTH_TOKENS_FILE", "SERVER_TLS_CERT_FILE", "SERVER_TLS_KEY_FILE", "SERVER_TLS_CLIENT_CA_FILE"} {
		fileFrom(variable)
	}

	// Authentication: off only when asked, else some credential source.
	switch {
	case truthy("auth", "disabled"):
		if env.Env["AUTH_MODE"] != "none" {
			bad("auth.disabled but AUTH_MODE=%q", env.Env["AUTH_MODE"])
		}
	case env.Env["AUTH_TOKENS_FILE"] == "" && env.Env["AUTH_OIDC_ISSUER"] == "":
		bad("authentication is on but neither AUTH_TOKENS_FILE nor AUTH_OIDC_ISSUER is set: PM would refuse to start")
	}
	if tls != (env.Env["SERVER_TLS_CERT_FILE"] != "") {
		bad("SERVER_TLS_CERT_FILE set=%v with tls.enabled=%v", env.Env["SERVER_TLS_CERT_FILE"] != "", tls)
	}
	if token, ok := secretData(fullname+"-auth", "admin-token"); ok {
		sum := sha256.Sum256([]byte(token))
		if !strings.Contains(env.Files[env.Env["AUTH_TOKENS_FILE"]], "sha256: "+hex.EncodeToString(sum[:])) {
			bad("the generated admin token's hash is not in the tokens file")
		}
		if len(token) < 32 {
			bad("the generated admin token has %d characters, want at least 32", len(token))
		}
	}

	// Migrations: a hook Job before install and upgrade, and pods that then
	// do not migrate themselves.
	jobName := fullname + "-migrate"
	_, hasJob := r.one("Job", jobName)
	if hasJob != jobWanted {
		bad("migration Job present=%v, want %v", hasJob, jobWanted)
	}
	if postgres {
		if want := map[bool]string{true: "false", false: "true"}[jobWanted]; env.Env["DATABASE_AUTO_MIGRATE"] != want {
			bad("DATABASE_AUTO_MIGRATE=%q with the migration Job %v, want %s", env.Env["DATABASE_AUTO_MIGRATE"], jobWanted, want)
		}
	}
	if hasJob {
		job, err := decode[batchv1.Job](r, "Job", jobName)
		if err != nil {
			bad("%v", err)
		} else {
			events := r.hooks["Job/"+jobName]
			if !slices.Contains(events, "pre-install") || !slices.Contains(events, "pre-upgrade") {
				bad("migration Job hooks %v, want pre-install and pre-upgrade", events)
			}
			jc := job.Spec.Template.Spec.Containers
			if len(jc) != 1 || !slices.Equal(jc[0].Args, []string{"migrate", "up"}) || jc[0].Image != c.Image {
				bad("the migration Job does not run `pm migrate up` from the server's image")
			}
			if matches(dep.Spec.Selector.MatchLabels, job.Spec.Template.Labels) {
				bad("the Deployment's selector (and so the Service and PDB) matches the migration pods")
			}
			if job.Spec.Template.Spec.ServiceAccountName != "" {
				bad("the migration Job names ServiceAccount %s, which does not exist yet at pre-install", job.Spec.Template.Spec.ServiceAccountName)
			}
			checkSecurity("migration Job", job.Spec.Template.Spec)
			for _, e := range jc[0].Env {
				if e.Name != "DATABASE_URL" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
					continue
				}
				ref := e.ValueFrom.SecretKeyRef
				id := "Secret/" + ref.Name
				switch {
				case isExisting(v, ref.Name):
				case len(r.hooks[id]) == 0:
					bad("the migration Job reads Secret %s, which is not a hook and does not exist at pre-install", ref.Name)
				case toInt(r.weights[id]) >= toInt(r.weights["Job/"+jobName]):
					bad("hook Secret %s (weight %s) is not created before the Job (weight %s)", ref.Name, r.weights[id], r.weights["Job/"+jobName])
				default:
					if val, ok := secretData(ref.Name, ref.Key); !ok || val != env.Env["DATABASE_URL"] {
						bad("the migration Job's DATABASE_URL differs from the server's")
					}
				}
			}
		}
	}

	// NOTES.txt: how to reach PM, how to get in, and what is unsafe.
	if os.Getenv("CHARTCHECK_NOTES") != "" {
		fmt.Printf("--- NOTES (%s)\n%s\n", p.name, r.notes)
	}
	for _, want := range []struct {
		when bool
		text string
	}{
		{true, "kubectl -n oaas port-forward svc/" + fullname},
		{truthy("auth", "disabled"), "every caller that reaches the\nService is an admin"},
		{!truthy("auth", "disabled") && !tls, "Bearer tokens travel in cleartext"},
		{v("storage", "type") == "memory", "a restart loses every\npackage"},
		{env.Env["CRM_CLUSTERS"] == "", "embedded\nsimulated cluster"},
	} {
		if want.when != strings.Contains(r.notes, want.text) {
			bad("NOTES.txt contains %q: %v, want %v", want.text, !want.when, want.when)
		}
	}
	if _, ok := secretData(fullname+"-auth", "admin-token"); ok && !strings.Contains(r.notes, "jsonpath='{.data.admin-token}'") {
		bad("NOTES.txt does not say how to read the generated admin token")
	}

	// ServiceMonitor: only when asked, pointing at the metrics port.
	sm, hasSM := r.one("ServiceMonitor", fullname)
	if hasSM != truthy("serviceMonitor", "enabled") {
		bad("ServiceMonitor present=%v with serviceMonitor.enabled=%v", hasSM, truthy("serviceMonitor", "enabled"))
	}
	if hasSM {
		var mon struct {
			APIVersion string `json:"apiVersion"`
			Spec       struct {
				Selector struct {
					MatchLabels map[string]string `json:"matchLabels"`
				} `json:"selector"`
				Endpoints []struct {
					Port string `json:"port"`
					Path string `json:"path"`
				} `json:"endpoints"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(sm, &mon); err != nil {
			bad("ServiceMonitor: %v", err)
		}
		if mon.APIVersion != "monitoring.coreos.com/v1" {
			bad("ServiceMonitor apiVersion %s", mon.APIVersion)
		}
		if svc != nil && !matches(mon.Spec.Selector.MatchLabels, svc.Labels) {
			bad("the ServiceMonitor does not select the Service")
		}
		if len(mon.Spec.Endpoints) != 1 || mon.Spec.Endpoints[0].Port != "metrics" || mon.Spec.Endpoints[0].Path != "/metrics" {
			bad("ServiceMonitor endpoints %+v, want port metrics, path /metrics", mon.Spec.Endpoints)
		}
	}
	return problems, env
}

// isExisting reports whether a Secret name is one the operator supplies
// (an existingSecret value), so the render cannot contain it.
func isExisting(v func(...string) any, name string) bool {
	for _, keys := range [][]string{{"database", "existingSecret"}, {"auth", "tokensFile", "existingSecret"}, {"tls", "existingSecret"}} {
		if s, _ := v(keys...).(string); s != "" && s == name {
			return true
		}
	}
	return false
}

func toInt(x any) int {
	switch n := x.(type) {
	case int:
		return n
	case int64:
		return int(n)
	case float64:
		return int(n)
	case string:
		var i int
		_, _ = fmt.Sscan(n, &i)
		return i
	}
	return 0
}

func writeEnv(dir, name string, env *containerEnv) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return err
	}
	file := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".json")
	return os.WriteFile(file, b, 0o600)
}
