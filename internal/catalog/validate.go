package catalog

import (
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	commonpb "github.com/oaas/pm/gen/go/oaas/common"
	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/fault"
)

// nameRule is the naming rule of packages, classes, functions, bindings and
// deployments: they end up inside Kubernetes object names downstream.
var nameRule = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// CheckName reports whether s follows the naming rule, with a message that
// says why not.
func CheckName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("is required")
	case len(s) > 63:
		return fmt.Errorf("%q is longer than 63 characters", s)
	case !nameRule.MatchString(s):
		return fmt.Errorf("%q must be 1-63 characters of [A-Za-z0-9._-] starting with a letter or digit", s)
	}
	return nil
}

// Problems collects every validation failure of one request, each prefixed
// with the path of the field at fault, so a client can fix them all at once.
type Problems struct {
	list []string
}

// Addf records a problem at path.
func (p *Problems) Addf(path, format string, args ...any) {
	p.list = append(p.list, path+": "+fmt.Sprintf(format, args...))
}

// Name records a naming-rule problem at path, if any.
func (p *Problems) Name(path, s string) {
	if err := CheckName(s); err != nil {
		p.Addf(path, "%v", err)
	}
}

// Err returns nil or one Invalid error listing every problem.
func (p *Problems) Err(what string) error {
	if len(p.list) == 0 {
		return nil
	}
	return fault.Invalidf("invalid %s: %s", what, strings.Join(p.list, "; "))
}

// ValidatePackage checks a package against the registry's rules and returns
// every problem in one Invalid error.
func ValidatePackage(pkg *pmv1.OPackage) error {
	var p Problems
	if pkg == nil {
		p.Addf("package", "is required")
		return p.Err("package")
	}
	p.Name("name", pkg.GetName())
	if v := pkg.GetVersion(); len(v) > 128 {
		p.Addf("version", "is longer than 128 characters")
	}
	for i, tag := range pkg.GetMetadata().GetTags() {
		path := fmt.Sprintf("metadata.tags[%d]", i)
		switch {
		case strings.TrimSpace(tag) == "":
			p.Addf(path, "must not be empty")
		case strings.Contains(tag, ","):
			// Tag filters accept comma-separated lists.
			p.Addf(path, "%q must not contain a comma", tag)
		case len(tag) > 128:
			p.Addf(path, "is longer than 128 characters")
		}
	}

	functions := map[string]bool{}
	for i, fn := range pkg.GetFunctions() {
		path := fmt.Sprintf("functions[%d]", i)
		p.Name(path+".key", fn.GetKey())
		if functions[fn.GetKey()] && fn.GetKey() != "" {
			p.Addf(path+".key", "duplicate function key %q", fn.GetKey())
		}
		functions[fn.GetKey()] = true
		if _, ok := pmv1.FunctionType_name[int32(fn.GetFunctionType())]; !ok {
			p.Addf(path+".function_type", "unknown value %d", fn.GetFunctionType())
		}
		checkProvision(&p, path+".provision_config", fn.GetProvisionConfig())
		checkEnv(&p, path+".config", fn.GetConfig())
	}

	classes := map[string]*pmv1.OClass{}
	for i, cls := range pkg.GetClasses() {
		path := fmt.Sprintf("classes[%d]", i)
		p.Name(path+".key", cls.GetKey())
		if _, dup := classes[cls.GetKey()]; dup && cls.GetKey() != "" {
			p.Addf(path+".key", "duplicate class key %q", cls.GetKey())
		}
		classes[cls.GetKey()] = cls
		checkState(&p, path+".state_spec", cls.GetStateSpec())
		bindings := map[string]bool{}
		for j, b := range cls.GetFunctionBindings() {
			bpath := fmt.Sprintf("%s.function_bindings[%d]", path, j)
			p.Name(bpath+".name", b.GetName())
			if bindings[b.GetName()] && b.GetName() != "" {
				p.Addf(bpath+".name", "duplicate binding name %q in class %q", b.GetName(), cls.GetKey())
			}
			bindings[b.GetName()] = true
			switch {
			case b.GetFunctionKey() == "":
				p.Addf(bpath+".function_key", "is required")
			case !functions[b.GetFunctionKey()]:
				p.Addf(bpath+".function_key", "%q is not a function of package %q", b.GetFunctionKey(), pkg.GetName())
			}
			if _, ok := pmv1.AccessModifier_name[int32(b.GetAccessModifier())]; !ok {
				p.Addf(bpath+".access_modifier", "unknown value %d", b.GetAccessModifier())
			}
			for k, param := range b.GetParameters() {
				if param == "" {
					p.Addf(fmt.Sprintf("%s.parameters[%d]", bpath, k), "must not be empty")
				}
			}
		}
	}

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
			p.Addf(path, "duplicate dependency %q", dep)
		}
		deps[dep] = true
	}

	keys := map[string]bool{}
	for i, d := range pkg.GetDeployments() {
		path := fmt.Sprintf("deployments[%d]", i)
		if keys[d.GetKey()] && d.GetKey() != "" {
			p.Addf(path+".key", "duplicate deployment key %q", d.GetKey())
		}
		keys[d.GetKey()] = true
		if d.GetPackageName() != "" && d.GetPackageName() != pkg.GetName() {
			p.Addf(path+".package_name", "%q must be empty or the package's own name %q", d.GetPackageName(), pkg.GetName())
		}
		checkDeployment(&p, path, d)
		if d.GetClassKey() != "" {
			if cls, ok := classes[d.GetClassKey()]; !ok {
				p.Addf(path+".class_key", "%q is not a class of package %q", d.GetClassKey(), pkg.GetName())
			} else {
				CheckFunctionSpecs(&p, path, d, pkg, cls)
			}
		}
	}
	return p.Err("package")
}

// ValidateDeployment checks the fields of a deployment that do not depend on
// stored state; the deploy service checks the package, class and clusters.
func ValidateDeployment(d *pmv1.OClassDeployment) error {
	var p Problems
	if d == nil {
		p.Addf("deployment", "is required")
		return p.Err("deployment")
	}
	checkDeployment(&p, "", d)
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
				"%q is not bound to class %q of package %q", fs.GetFunctionKey(), cls.GetKey(), pkg.GetName())
		}
	}
}

func join(prefix, path string) string {
	if prefix == "" {
		return path
	}
	return prefix + "." + path
}

func checkDeployment(p *Problems, prefix string, d *pmv1.OClassDeployment) {
	p.Name(join(prefix, "key"), d.GetKey())
	if prefix == "" {
		// Embedded deployments inherit the package name.
		if d.GetPackageName() == "" {
			p.Addf("package_name", "is required")
		}
	}
	if d.GetClassKey() == "" {
		p.Addf(join(prefix, "class_key"), "is required")
	}
	envs := map[string]bool{}
	for i, env := range d.GetTargetEnvs() {
		path := join(prefix, fmt.Sprintf("target_envs[%d]", i))
		switch {
		case env == "":
			p.Addf(path, "must not be empty")
		case envs[env]:
			p.Addf(path, "duplicate cluster %q", env)
		}
		envs[env] = true
	}
	checkNFR(p, join(prefix, "nfr_requirements"), d.GetNfrRequirements())
	specs := map[string]bool{}
	for i, fs := range d.GetFunctions() {
		path := join(prefix, fmt.Sprintf("functions[%d]", i))
		if fs.GetFunctionKey() == "" {
			p.Addf(path+".function_key", "is required")
		} else if specs[fs.GetFunctionKey()] {
			p.Addf(path+".function_key", "duplicate function %q", fs.GetFunctionKey())
		}
		specs[fs.GetFunctionKey()] = true
		if q := fs.GetQosRequirement(); q != nil {
			if q.GetThroughput() < 0 {
				p.Addf(path+".qos_requirement.throughput", "must not be negative")
			}
			checkUnit(p, path+".qos_requirement.availability", q.GetAvailability())
		}
		checkProvision(p, path+".provision_config", fs.GetProvisionConfig())
		checkEnv(p, path+".config", fs.GetConfig())
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
		for i, c := range o.GetCollections() {
			if c == "" {
				p.Addf(fmt.Sprintf("%s.collections[%d]", path, i), "must not be empty")
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
	names := map[string]bool{}
	for i, k := range s.GetKeySpecs() {
		kpath := fmt.Sprintf("%s.key_specs[%d].name", path, i)
		switch {
		case k.GetName() == "":
			p.Addf(kpath, "is required")
		case names[k.GetName()]:
			p.Addf(kpath, "duplicate key %q", k.GetName())
		}
		names[k.GetName()] = true
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
	quantities := []struct {
		field string
		value *string
	}{
		{"cpu_request", pc.CpuRequest}, {"cpu_limit", pc.CpuLimit},
		{"memory_request", pc.MemoryRequest}, {"memory_limit", pc.MemoryLimit},
	}
	parsed := map[string]resource.Quantity{}
	for _, q := range quantities {
		if q.value == nil {
			continue
		}
		v, err := resource.ParseQuantity(*q.value)
		if err != nil {
			p.Addf(path+"."+q.field, "%q is not a Kubernetes quantity (e.g. 500m, 1, 256Mi)", *q.value)
			continue
		}
		if v.Sign() < 0 {
			p.Addf(path+"."+q.field, "%q must not be negative", *q.value)
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

// checkEnv checks config maps, which become container environment variables.
func checkEnv(p *Problems, path string, env map[string]string) {
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			p.Addf(path, "%q is not a valid environment variable name", k)
		}
	}
}
