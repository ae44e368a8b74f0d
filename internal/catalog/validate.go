package catalog

import (
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"k8s.io/apimachinery/pkg/api/resource"

	commonpb "github.com/oaas/pm/gen/go/oaas/common"
	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/fault"
)

// Per-field limits of packages and deployments, in bytes of UTF-8 for
// strings. They bound what one document can make the registry store, return
// on every list and send to every CRM; the request pipeline bounds the whole
// message separately. docs/limits.md lists each with its reason: change
// both together.
const (
	// MaxNameBytes bounds names and keys (packages, classes, functions,
	// bindings, deployments): they end up in Kubernetes object names.
	MaxNameBytes = 63
	// MaxVersionBytes bounds a package version (semver with build metadata
	// fits easily).
	MaxVersionBytes = 128
	// MaxAuthorBytes bounds metadata.author (a name and an e-mail address).
	MaxAuthorBytes = 256
	// MaxDescriptionBytes bounds every description field.
	MaxDescriptionBytes = 4 << 10
	// MaxTags bounds the number of tags of a package.
	MaxTags = 64
	// MaxTagBytes bounds one tag (a label value, as in Kubernetes).
	MaxTagBytes = 63
	// MaxDependencies bounds the dependencies of a package.
	MaxDependencies = 256
	// MaxClasses bounds the classes of a package.
	MaxClasses = 256
	// MaxFunctions bounds the functions of a package.
	MaxFunctions = 256
	// MaxBindings bounds the function bindings of one class.
	MaxBindings = 256
	// MaxParameters bounds the parameters of one function binding.
	MaxParameters = 64
	// MaxKeySpecs bounds the key specs of one state spec.
	MaxKeySpecs = 256
	// MaxTextBytes bounds short free-text strings that are not names:
	// binding parameters, key spec names and types, odgm collections,
	// available_location (the length of a DNS name or a ConfigMap key).
	MaxTextBytes = 253
	// MaxIdentBytes bounds short identifiers: target_envs entries (cluster
	// names), default_provider, serialization_format, shard_type.
	MaxIdentBytes = 63
	// MaxConfigEntries bounds the entries of one config map.
	MaxConfigEntries = 256
	// MaxConfigKeyBytes bounds a config key (an environment variable name;
	// Kubernetes caps ConfigMap keys at 253).
	MaxConfigKeyBytes = 253
	// MaxConfigValueBytes bounds a config value.
	MaxConfigValueBytes = 32 << 10
	// MaxConfigTotalBytes bounds the keys and values of every config map of
	// one package (its functions and embedded deployments) or of one
	// deployment together: config travels to CRMs in every deployment unit.
	MaxConfigTotalBytes = 1 << 20
	// MaxImageBytes bounds provision_config.container_image (an OCI
	// reference with registry, path, tag and digest).
	MaxImageBytes = 1024
	// MaxURLBytes bounds provision_config.wasm_module_url.
	MaxURLBytes = 2048
	// MaxQuantityBytes bounds a Kubernetes quantity string (cpu and memory
	// requests and limits).
	MaxQuantityBytes = 64
	// MaxTargetEnvs bounds the clusters a deployment names.
	MaxTargetEnvs = 64
	// MaxFunctionSpecs bounds the function specs of one deployment.
	MaxFunctionSpecs = 256
	// MaxCollections bounds odgm.collections of one deployment.
	MaxCollections = 256
	// MaxDeployments bounds the deployments embedded in one package.
	MaxDeployments = 64
	// MaxNodeIDs bounds the ODGM node ids of one cluster in
	// odgm.env_node_ids (PM generates one per cluster).
	MaxNodeIDs = 256
	// MaxLogFilterBytes bounds odgm.log, an ODGM log filter
	// ("info,openraft=warn") that becomes an environment variable.
	MaxLogFilterBytes = 1024
	// MaxAttributes bounds telemetry.resource_attributes.
	MaxAttributes = 64
	// MaxAttributeValueBytes bounds one telemetry resource attribute value.
	MaxAttributeValueBytes = 1024
	// MaxProblems bounds the problems listed in one error; the rest are
	// counted, so a hostile document cannot make the error message large.
	MaxProblems = 100
	// maxEcho bounds how much of a client's value a message repeats.
	maxEcho = 64
)

// nameRule is the naming rule of packages, classes, functions, bindings and
// deployments: they end up inside Kubernetes object names downstream.
var nameRule = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// envRule is the rule of environment (cluster) names in documents: OaaS
// names clusters with [A-Za-z0-9_-] (PM's own configured names are a
// subset).
var envRule = regexp.MustCompile(`^[A-Za-z0-9_-]{1,63}$`)

// maxNodeID bounds ODGM node ids: JSON numbers are exact integers only
// below 2^53, and ids travel as JSON numbers.
const maxNodeID = 1 << 53

// CheckName reports whether s follows the naming rule, with a message that
// says why not.
func CheckName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("is required")
	case len(s) > MaxNameBytes:
		return fmt.Errorf("%s is %d bytes, at most %d", quote(s), len(s), MaxNameBytes)
	case !nameRule.MatchString(s):
		return fmt.Errorf("%s must be 1-63 characters of [A-Za-z0-9._-] starting with a letter or digit", quote(s))
	}
	return nil
}

// quote renders a client's value for a message, cut to maxEcho bytes on a
// rune boundary so that a huge value does not make a huge message.
func quote(s string) string {
	if len(s) <= maxEcho {
		return strconv.Quote(s)
	}
	n := maxEcho
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return strconv.Quote(s[:n]) + "…"
}

// Problems collects every validation failure of one request, each prefixed
// with the path of the field at fault, so a client can fix them all at once.
type Problems struct {
	list    []string
	dropped int
}

// Addf records a problem at path.
func (p *Problems) Addf(path, format string, args ...any) {
	if len(p.list) >= MaxProblems {
		p.dropped++
		return
	}
	p.list = append(p.list, path+": "+fmt.Sprintf(format, args...))
}

// Name records a naming-rule problem at path, if any.
func (p *Problems) Name(path, s string) {
	if err := CheckName(s); err != nil {
		p.Addf(path, "%v", err)
	}
}

// MaxLen records a problem at path if s is longer than limit bytes, and
// reports whether s is within the limit.
func (p *Problems) MaxLen(path, s string, limit int) bool {
	if len(s) > limit {
		p.Addf(path, "is %d bytes, at most %d", len(s), limit)
		return false
	}
	return true
}

// MaxCount records a problem at path if a list holds more than limit
// items; noun names them ("80 tags, at most 64").
func (p *Problems) MaxCount(path string, n, limit int, noun string) {
	if n > limit {
		p.Addf(path, "%d %s, at most %d", n, noun, limit)
	}
}

// Err returns nil or one Invalid error listing every problem.
func (p *Problems) Err(what string) error {
	if len(p.list) == 0 {
		return nil
	}
	msg := strings.Join(p.list, "; ")
	if p.dropped > 0 {
		msg += fmt.Sprintf("; and %d more problems", p.dropped)
	}
	return fault.Invalidf("invalid %s: %s", what, msg)
}

// ValidatePackage checks a package against the registry's rules and returns
// every problem in one Invalid error.
func ValidatePackage(pkg *pmv1.OPackage) error {
	var p Problems
	if pkg == nil {
		p.Addf("package", "is required")
		return p.Err("package")
	}
	name := quote(pkg.GetName())
	p.Name("name", pkg.GetName())
	p.MaxLen("version", pkg.GetVersion(), MaxVersionBytes)
	checkMetadata(&p, pkg.GetMetadata())

	p.MaxCount("functions", len(pkg.GetFunctions()), MaxFunctions, "functions")
	configBytes := 0
	functions := map[string]bool{}
	for i, fn := range pkg.GetFunctions() {
		path := fmt.Sprintf("functions[%d]", i)
		p.Name(path+".key", fn.GetKey())
		if functions[fn.GetKey()] && fn.GetKey() != "" {
			p.Addf(path+".key", "duplicate function key %s", quote(fn.GetKey()))
		}
		functions[fn.GetKey()] = true
		if _, ok := pmv1.FunctionType_name[int32(fn.GetFunctionType())]; !ok {
			p.Addf(path+".function_type", "unknown value %d", fn.GetFunctionType())
		}
		p.MaxLen(path+".description", fn.GetDescription(), MaxDescriptionBytes)
		checkProvision(&p, path+".provision_config", fn.GetProvisionConfig())
		configBytes += checkEnv(&p, path+".config", fn.GetConfig())
	}

	p.MaxCount("classes", len(pkg.GetClasses()), MaxClasses, "classes")
	classes := map[string]*pmv1.OClass{}
	for i, cls := range pkg.GetClasses() {
		path := fmt.Sprintf("classes[%d]", i)
		p.Name(path+".key", cls.GetKey())
		if _, dup := classes[cls.GetKey()]; dup && cls.GetKey() != "" {
			p.Addf(path+".key", "duplicate class key %s", quote(cls.GetKey()))
		}
		classes[cls.GetKey()] = cls
		p.MaxLen(path+".description", cls.GetDescription(), MaxDescriptionBytes)
		checkState(&p, path+".state_spec", cls.GetStateSpec())
		p.MaxCount(path+".function_bindings", len(cls.GetFunctionBindings()), MaxBindings, "bindings")
		bindings := map[string]bool{}
		for j, b := range cls.GetFunctionBindings() {
			bpath := fmt.Sprintf("%s.function_bindings[%d]", path, j)
			p.Name(bpath+".name", b.GetName())
			if bindings[b.GetName()] && b.GetName() != "" {
				p.Addf(bpath+".name", "duplicate binding name %s in class %s", quote(b.GetName()), quote(cls.GetKey()))
			}
			bindings[b.GetName()] = true
			switch {
			case b.GetFunctionKey() == "":
				p.Addf(bpath+".function_key", "is required")
			case !functions[b.GetFunctionKey()]:
				p.Addf(bpath+".function_key", "%s is not a function of package %s", quote(b.GetFunctionKey()), name)
			}
			if _, ok := pmv1.AccessModifier_name[int32(b.GetAccessModifier())]; !ok {
				p.Addf(bpath+".access_modifier", "unknown value %d", b.GetAccessModifier())
			}
			p.MaxCount(bpath+".parameters", len(b.GetParameters()), MaxParameters, "parameters")
			for k, param := range b.GetParameters() {
				ppath := fmt.Sprintf("%s.parameters[%d]", bpath, k)
				if param == "" {
					p.Addf(ppath, "must not be empty")
				}
				p.MaxLen(ppath, param, MaxTextBytes)
			}
		}
	}

	p.MaxCount("dependencies", len(pkg.GetDependencies()), MaxDependencies, "dependencies")
	deps := map[string]bool{}
	for i, dep := range pkg.GetDependencies() {
		path := fmt.Sprintf("dependencies[%d]", i)
		switch {
		case dep == "":
			p.Addf(path, "must not be empty")
		case CheckName(dep) != nil:
			p.Name(path, dep)
		case dep == pkg.GetName():
			p.Addf(path, "a package cannot depend on itself")
		case deps[dep]:
			p.Addf(path, "duplicate dependency %s", quote(dep))
		}
		deps[dep] = true
	}

	p.MaxCount("deployments", len(pkg.GetDeployments()), MaxDeployments, "deployments")
	keys := map[string]bool{}
	for i, d := range pkg.GetDeployments() {
		path := fmt.Sprintf("deployments[%d]", i)
		if keys[d.GetKey()] && d.GetKey() != "" {
			p.Addf(path+".key", "duplicate deployment key %s", quote(d.GetKey()))
		}
		keys[d.GetKey()] = true
		if d.GetPackageName() != "" && d.GetPackageName() != pkg.GetName() {
			p.Addf(path+".package_name", "%s must be empty or the package's own name %s", quote(d.GetPackageName()), name)
		}
		configBytes += checkDeployment(&p, path, d)
		if d.GetClassKey() != "" {
			if cls, ok := classes[d.GetClassKey()]; !ok {
				p.Addf(path+".class_key", "%s is not a class of package %s", quote(d.GetClassKey()), name)
			} else {
				CheckFunctionSpecs(&p, path, d, pkg, cls)
			}
		}
	}
	if configBytes > MaxConfigTotalBytes {
		p.Addf("functions[*].config + deployments[*].functions[*].config",
			"%d bytes of keys and values in total, at most %d", configBytes, MaxConfigTotalBytes)
	}
	return p.Err("package")
}

func checkMetadata(p *Problems, m *pmv1.PackageMetadata) {
	if m == nil {
		return
	}
	p.MaxLen("metadata.author", m.GetAuthor(), MaxAuthorBytes)
	p.MaxLen("metadata.description", m.GetDescription(), MaxDescriptionBytes)
	p.MaxCount("metadata.tags", len(m.GetTags()), MaxTags, "tags")
	for i, tag := range m.GetTags() {
		path := fmt.Sprintf("metadata.tags[%d]", i)
		switch {
		case strings.TrimSpace(tag) == "":
			p.Addf(path, "must not be empty")
		case strings.Contains(tag, ","):
			// Tag filters accept comma-separated lists.
			p.Addf(path, "%s must not contain a comma", quote(tag))
		default:
			p.MaxLen(path, tag, MaxTagBytes)
		}
	}
}

// ValidateDeployment checks the fields of a deployment that do not depend on
// stored state; the deploy service checks the package, class and clusters.
func ValidateDeployment(d *pmv1.OClassDeployment) error {
	var p Problems
	if d == nil {
		p.Addf("deployment", "is required")
		return p.Err("deployment")
	}
	if n := checkDeployment(&p, "", d); n > MaxConfigTotalBytes {
		p.Addf("functions[*].config", "%d bytes of keys and values in total, at most %d", n, MaxConfigTotalBytes)
	}
	return p.Err("deployment")
}

// CheckFunctionSpecs checks that a deployment's function specs name
// functions bound to the class.
func CheckFunctionSpecs(p *Problems, prefix string, d *pmv1.OClassDeployment, pkg *pmv1.OPackage, cls *pmv1.OClass) {
	bound := map[string]bool{}
	for _, b := range cls.GetFunctionBindings() {
		bound[b.GetFunctionKey()] = true
	}
	for i, fs := range d.GetFunctions() {
		if fs.GetFunctionKey() != "" && !bound[fs.GetFunctionKey()] {
			p.Addf(join(prefix, fmt.Sprintf("functions[%d].function_key", i)),
				"%s is not bound to class %s of package %s", quote(fs.GetFunctionKey()), quote(cls.GetKey()), quote(pkg.GetName()))
		}
	}
}

func join(prefix, path string) string {
	if prefix == "" {
		return path
	}
	return prefix + "." + path
}

// checkDeployment checks a deployment spec and returns the bytes of its
// config maps. The server-managed fields (condition, status, times) are
// not checked: they are dropped before anything is stored.
func checkDeployment(p *Problems, prefix string, d *pmv1.OClassDeployment) int {
	p.Name(join(prefix, "key"), d.GetKey())
	if prefix == "" {
		// Embedded deployments inherit the package name.
		if d.GetPackageName() == "" {
			p.Addf("package_name", "is required")
		} else {
			p.Name("package_name", d.GetPackageName())
		}
	}
	if d.GetClassKey() == "" {
		p.Addf(join(prefix, "class_key"), "is required")
	} else {
		p.Name(join(prefix, "class_key"), d.GetClassKey())
	}
	checkEnvList(p, join(prefix, "target_envs"), d.GetTargetEnvs())
	checkEnvList(p, join(prefix, "available_envs"), d.GetAvailableEnvs())
	tpath := join(prefix, "env_templates")
	p.MaxCount(tpath, len(d.GetEnvTemplates()), MaxTargetEnvs, "clusters")
	for _, env := range slices.Sorted(maps.Keys(d.GetEnvTemplates())) {
		epath := fmt.Sprintf("%s[%s]", tpath, quote(env))
		checkEnvName(p, epath, env)
		if tpl := d.GetEnvTemplates()[env]; strings.TrimSpace(tpl) == "" {
			p.Addf(epath, "template name must not be empty")
		} else {
			p.MaxLen(epath, tpl, MaxTextBytes)
		}
	}
	checkTelemetry(p, join(prefix, "telemetry"), d.GetTelemetry())
	checkNFR(p, join(prefix, "nfr_requirements"), d.GetNfrRequirements())
	p.MaxCount(join(prefix, "functions"), len(d.GetFunctions()), MaxFunctionSpecs, "function specs")
	configBytes := 0
	specs := map[string]bool{}
	firstSpec := map[string]*pmv1.FunctionDeploymentSpec{}
	for i, fs := range d.GetFunctions() {
		path := join(prefix, fmt.Sprintf("functions[%d]", i))
		switch {
		case fs.GetFunctionKey() == "":
			p.Addf(path+".function_key", "is required")
		case specs[fs.GetFunctionKey()] && !proto.Equal(firstSpec[fs.GetFunctionKey()], fs):
			p.Addf(path+".function_key", "duplicate function %s with different settings", quote(fs.GetFunctionKey()))
		default:
			p.MaxLen(path+".function_key", fs.GetFunctionKey(), MaxNameBytes)
		}
		specs[fs.GetFunctionKey()] = true
		p.MaxLen(path+".description", fs.GetDescription(), MaxDescriptionBytes)
		p.MaxLen(path+".available_location", fs.GetAvailableLocation(), MaxTextBytes)
		if q := fs.GetQosRequirement(); q != nil {
			if q.GetThroughput() < 0 {
				p.Addf(path+".qos_requirement.throughput", "must not be negative")
			}
			checkUnit(p, path+".qos_requirement.availability", q.GetAvailability())
		}
		if dup, ok := firstSpec[fs.GetFunctionKey()]; ok && proto.Equal(dup, fs) {
			// A deployment as PM answers it lists derived functions once
			// per binding; the same spec twice is that, sent back.
			configBytes -= envBytes(fs.GetConfig())
		}
		if _, ok := firstSpec[fs.GetFunctionKey()]; !ok {
			firstSpec[fs.GetFunctionKey()] = fs
		}
		checkProvision(p, path+".provision_config", fs.GetProvisionConfig())
		configBytes += checkEnv(p, path+".config", fs.GetConfig())
		checkNFR(p, path+".nfr_requirements", fs.GetNfrRequirements())
	}
	if o := d.GetOdgm(); o != nil {
		path := join(prefix, "odgm")
		if o.PartitionCount != nil && o.GetPartitionCount() < 1 {
			p.Addf(path+".partition_count", "must be at least 1, got %d", o.GetPartitionCount())
		}
		if o.ReplicaCount != nil && o.GetReplicaCount() < 1 {
			p.Addf(path+".replica_count", "must be at least 1, got %d", o.GetReplicaCount())
		}
		p.MaxCount(path+".collections", len(o.GetCollections()), MaxCollections, "collections")
		for i, c := range o.GetCollections() {
			cpath := fmt.Sprintf("%s.collections[%d]", path, i)
			if c == "" {
				p.Addf(cpath, "must not be empty")
			}
			p.MaxLen(cpath, c, MaxTextBytes)
		}
		p.MaxLen(path+".shard_type", o.GetShardType(), MaxIdentBytes)
		if o.Log != nil {
			switch {
			case strings.TrimSpace(o.GetLog()) == "":
				p.Addf(path+".log", "must not be empty when set")
			case strings.ContainsAny(o.GetLog(), "\x00\r\n"):
				p.Addf(path+".log", "must be one line (it becomes ODGM_LOG)")
			default:
				p.MaxLen(path+".log", o.GetLog(), MaxLogFilterBytes)
			}
		}
		checkNodeIDs(p, path+".env_node_ids", o.GetEnvNodeIds())
	}
	return configBytes
}

// checkEnvName records a problem if env is not an environment name.
func checkEnvName(p *Problems, path, env string) {
	switch {
	case env == "":
		p.Addf(path, "must not be empty")
	case !p.MaxLen(path, env, MaxIdentBytes):
	case !envRule.MatchString(env):
		p.Addf(path, "%s is not a cluster name ([A-Za-z0-9_-])", quote(env))
	}
}

// checkEnvList checks a list of environment names: bounded, valid, no
// duplicates.
func checkEnvList(p *Problems, path string, envs []string) {
	p.MaxCount(path, len(envs), MaxTargetEnvs, "clusters")
	seen := map[string]bool{}
	for i, env := range envs {
		epath := fmt.Sprintf("%s[%d]", path, i)
		if seen[env] && env != "" {
			p.Addf(epath, "duplicate cluster %s", quote(env))
			continue
		}
		seen[env] = true
		checkEnvName(p, epath, env)
	}
}

// checkTelemetry checks a deployment's telemetry settings.
func checkTelemetry(p *Problems, path string, t *pmv1.TelemetryConfig) {
	if t == nil {
		return
	}
	if t.SamplingRate != nil {
		checkUnit(p, path+".sampling_rate", t.GetSamplingRate())
	}
	if t.ServiceName != nil && strings.TrimSpace(t.GetServiceName()) == "" {
		p.Addf(path+".service_name", "must not be empty when set")
	}
	p.MaxLen(path+".service_name", t.GetServiceName(), MaxTextBytes)
	apath := path + ".resource_attributes"
	p.MaxCount(apath, len(t.GetResourceAttributes()), MaxAttributes, "attributes")
	for _, k := range slices.Sorted(maps.Keys(t.GetResourceAttributes())) {
		kpath := fmt.Sprintf("%s[%s]", apath, quote(k))
		if strings.TrimSpace(k) == "" {
			p.Addf(apath, "attribute names must not be empty")
			continue
		}
		p.MaxLen(kpath, k, MaxTextBytes)
		p.MaxLen(kpath, t.GetResourceAttributes()[k], MaxAttributeValueBytes)
	}
}

// checkNodeIDs checks odgm.env_node_ids: cluster names mapped to lists of
// whole numbers in [0, 2^53), none used twice in the deployment.
func checkNodeIDs(p *Problems, path string, ids map[string]*structpb.ListValue) {
	p.MaxCount(path, len(ids), MaxTargetEnvs, "clusters")
	owner := map[float64]string{}
	for _, env := range slices.Sorted(maps.Keys(ids)) {
		epath := fmt.Sprintf("%s[%s]", path, quote(env))
		checkEnvName(p, epath, env)
		values := ids[env].GetValues()
		p.MaxCount(epath, len(values), MaxNodeIDs, "node ids")
		for i, v := range values {
			ipath := fmt.Sprintf("%s[%d]", epath, i)
			n, ok := v.GetKind().(*structpb.Value_NumberValue)
			switch {
			case !ok:
				p.Addf(ipath, "must be a number (a node id)")
			case n.NumberValue != math.Trunc(n.NumberValue) || n.NumberValue < 0 || n.NumberValue >= maxNodeID:
				p.Addf(ipath, "%v is not a whole number in [0, 2^53)", n.NumberValue)
			case owner[n.NumberValue] != "":
				p.Addf(ipath, "node id %d is also listed for %s", int64(n.NumberValue), quote(owner[n.NumberValue]))
			default:
				owner[n.NumberValue] = env
			}
		}
	}
}

func checkUnit(p *Problems, path string, v float64) {
	if math.IsNaN(v) || v < 0 || v > 1 {
		p.Addf(path, "%v is out of range [0,1]", v)
	}
}

func checkNFR(p *Problems, path string, n *commonpb.NfrRequirements) {
	if n == nil {
		return
	}
	if n.Availability != nil {
		checkUnit(p, path+".availability", n.GetAvailability())
	}
	if n.CpuUtilizationTarget != nil {
		checkUnit(p, path+".cpu_utilization_target", n.GetCpuUtilizationTarget())
	}
	if n.MinThroughputRps != nil && n.GetMinThroughputRps() < 1 {
		p.Addf(path+".min_throughput_rps", "must be at least 1")
	}
	if n.MaxLatencyMs != nil && n.GetMaxLatencyMs() < 1 {
		p.Addf(path+".max_latency_ms", "must be at least 1")
	}
}

func checkState(p *Problems, path string, s *pmv1.StateSpecification) {
	if s == nil {
		return
	}
	if _, ok := pmv1.ConsistencyModel_name[int32(s.GetConsistencyModel())]; !ok {
		p.Addf(path+".consistency_model", "unknown value %d", s.GetConsistencyModel())
	}
	p.MaxLen(path+".default_provider", s.GetDefaultProvider(), MaxIdentBytes)
	p.MaxLen(path+".serialization_format", s.GetSerializationFormat(), MaxIdentBytes)
	p.MaxCount(path+".key_specs", len(s.GetKeySpecs()), MaxKeySpecs, "key specs")
	names := map[string]bool{}
	for i, k := range s.GetKeySpecs() {
		kpath := fmt.Sprintf("%s.key_specs[%d]", path, i)
		switch {
		case k.GetName() == "":
			p.Addf(kpath+".name", "is required")
		case names[k.GetName()]:
			p.Addf(kpath+".name", "duplicate key %s", quote(k.GetName()))
		default:
			p.MaxLen(kpath+".name", k.GetName(), MaxTextBytes)
		}
		names[k.GetName()] = true
		p.MaxLen(kpath+".key_type", k.GetKeyType(), MaxTextBytes)
	}
}

func checkProvision(p *Problems, path string, pc *commonpb.ProvisionConfig) {
	if pc == nil {
		return
	}
	if pc.Port != nil && (pc.GetPort() < 1 || pc.GetPort() > 65535) {
		p.Addf(path+".port", "%d is out of range 1-65535", pc.GetPort())
	}
	if pc.MinScale != nil && pc.MaxScale != nil && pc.GetMinScale() > pc.GetMaxScale() {
		p.Addf(path, "min_scale %d is greater than max_scale %d", pc.GetMinScale(), pc.GetMaxScale())
	}
	if pc.ContainerImage != nil && strings.TrimSpace(pc.GetContainerImage()) == "" {
		p.Addf(path+".container_image", "must not be empty when set")
	}
	p.MaxLen(path+".container_image", pc.GetContainerImage(), MaxImageBytes)
	p.MaxLen(path+".wasm_module_url", pc.GetWasmModuleUrl(), MaxURLBytes)
	quantities := []struct {
		field string
		value *string
	}{
		{"cpu_request", pc.CpuRequest}, {"cpu_limit", pc.CpuLimit},
		{"memory_request", pc.MemoryRequest}, {"memory_limit", pc.MemoryLimit},
	}
	parsed := map[string]resource.Quantity{}
	for _, q := range quantities {
		if q.value == nil || !p.MaxLen(path+"."+q.field, *q.value, MaxQuantityBytes) {
			continue
		}
		v, err := resource.ParseQuantity(*q.value)
		if err != nil {
			p.Addf(path+"."+q.field, "%s is not a Kubernetes quantity (e.g. 500m, 1, 256Mi)", quote(*q.value))
			continue
		}
		if v.Sign() < 0 {
			p.Addf(path+"."+q.field, "%s must not be negative", quote(*q.value))
			continue
		}
		parsed[q.field] = v
	}
	for _, pair := range [][2]string{{"cpu_request", "cpu_limit"}, {"memory_request", "memory_limit"}} {
		req, okReq := parsed[pair[0]]
		lim, okLim := parsed[pair[1]]
		if okReq && okLim && req.Cmp(lim) > 0 {
			p.Addf(path+"."+pair[0], "%s is greater than %s %s", req.String(), pair[1], lim.String())
		}
	}
}

// checkEnv checks config maps, which become container environment
// variables, and returns the bytes of their keys and values.
func checkEnv(p *Problems, path string, env map[string]string) int {
	p.MaxCount(path, len(env), MaxConfigEntries, "entries")
	total := 0
	for _, k := range slices.Sorted(maps.Keys(env)) {
		v := env[k]
		total += len(k) + len(v)
		switch {
		case k == "" || strings.ContainsAny(k, "=\x00"):
			p.Addf(path, "%s is not a valid environment variable name", quote(k))
		case len(k) > MaxConfigKeyBytes:
			p.Addf(path, "key %s is %d bytes, at most %d", quote(k), len(k), MaxConfigKeyBytes)
		}
		if len(v) > MaxConfigValueBytes {
			p.Addf(fmt.Sprintf("%s[%s]", path, quote(k)), "value is %d bytes, at most %d", len(v), MaxConfigValueBytes)
		}
	}
	return total
}

// envBytes is the bytes of a config map's keys and values.
func envBytes(env map[string]string) int {
	total := 0
	for k, v := range env {
		total += len(k) + len(v)
	}
	return total
}
