package deploy

import (
	"context"
	"encoding/binary"
	"hash/fnv"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
)

// This file is what PM fills into a deployment spec, as the current OaaS
// generation does (upstream-head-delta §3.4 and §5): the selected clusters
// as target_envs, the ODGM defaults, node ids per cluster, and the function
// specs derived from the class. The stored spec stays what the client
// wrote, so that sending the same document again changes nothing and a
// package update still reaches the units of a deployment that names no
// functions; the filled-in form is computed from it whenever a unit is
// built (effectiveSpec) or a deployment is answered (answerSpec).

// defaultODGMLog is the ODGM log filter of a deployment that sets none.
const defaultODGMLog = "info"

// effectiveSpec is spec as the units of a deployment planned on clusters
// carry it: target_envs the clusters when the client named none; a given
// odgm completed (ODGMDefaults); and a function spec repeated identically
// (PM's own answers list derived functions once per binding) kept once.
// The result shares nothing with spec.
//
// An absent odgm stays absent here: the first generation sent no
// odgm_config then, and its CRMs render no data grid without one. The
// current generation always sends one; BuildUnit gets it from ODGMDefaults
// for the CRMs that expect it, and answers always show it (answerSpec).
func effectiveSpec(spec *pmv1.OClassDeployment, clusters []string) *pmv1.OClassDeployment {
	out := proto.CloneOf(spec)
	if len(out.GetTargetEnvs()) == 0 {
		out.TargetEnvs = slices.Clone(clusters)
	}
	if len(out.GetFunctions()) > 1 {
		var kept []*pmv1.FunctionDeploymentSpec
		for _, f := range out.GetFunctions() {
			if !slices.ContainsFunc(kept, func(k *pmv1.FunctionDeploymentSpec) bool { return proto.Equal(k, f) }) {
				kept = append(kept, f)
			}
		}
		out.Functions = kept
	}
	if out.Odgm != nil {
		out.Odgm = ODGMDefaults(out, clusters)
	}
	return out
}

// ODGMDefaults is the ODGM spec of a deployment placed on clusters as the
// current OaaS generation fills it in (upstream-head-delta §3.4, §5): the
// spec's odgm, or an empty one, with collections defaulting to
// "<package>.<class>", log to "info", replica_count the number of clusters
// (overwriting the client's, as OaaS does), and a node id for each cluster
// that has none. The result shares nothing with spec.
func ODGMDefaults(spec *pmv1.OClassDeployment, clusters []string) *pmv1.OdgmDataSpec {
	o := &pmv1.OdgmDataSpec{}
	if spec.GetOdgm() != nil {
		o = proto.CloneOf(spec.GetOdgm())
	}
	if len(o.GetCollections()) == 0 {
		o.Collections = []string{spec.GetPackageName() + "." + spec.GetClassKey()}
	}
	if o.Log == nil {
		o.Log = proto.String(defaultODGMLog)
	}
	if len(clusters) > 0 {
		o.ReplicaCount = proto.Int32(int32(min(len(clusters), 1<<30))) //nolint:gosec // capped
	}
	fillNodeIDs(spec.GetKey(), o, clusters)
	return o
}

// fillNodeIDs gives each cluster without node ids one: a hash of the
// deployment key and the cluster below 2^32 (as OaaS draws them), moved on
// past ids already taken. Being a function of its inputs, it is the same
// on every PM and every re-plan, so nothing needs to store it.
func fillNodeIDs(key string, o *pmv1.OdgmDataSpec, clusters []string) {
	taken := map[float64]bool{}
	for _, l := range o.GetEnvNodeIds() {
		for _, v := range l.GetValues() {
			taken[v.GetNumberValue()] = true
		}
	}
	for _, c := range clusters {
		if len(o.GetEnvNodeIds()[c].GetValues()) > 0 {
			continue
		}
		id := nodeID(key, c)
		for taken[float64(id)] {
			id++ // wraps below 2^32
		}
		taken[float64(id)] = true
		if o.EnvNodeIds == nil {
			o.EnvNodeIds = map[string]*structpb.ListValue{}
		}
		o.EnvNodeIds[c] = &structpb.ListValue{Values: []*structpb.Value{structpb.NewNumberValue(float64(id))}}
	}
}

// nodeID is the generated ODGM node id of a deployment's cluster.
func nodeID(key, cluster string) uint32 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(key + "\x00" + cluster)) // a hash never fails
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], h.Sum64())
	return binary.BigEndian.Uint32(b[:4]) ^ binary.BigEndian.Uint32(b[4:])
}

// answerSpec is a deployment's spec as PM answers it: effectiveSpec on its
// planned clusters and, when the client named no functions, the function
// specs derived from the class, one per binding in binding order (function
// key, description, provision_config and config of the package function),
// as OaaS lists them. pkg may be nil (the package is gone): functions are
// then left as they are.
func answerSpec(d *Deployment, pkg *pmv1.OPackage) *pmv1.OClassDeployment {
	spec := d.Spec
	if spec == nil {
		spec = &pmv1.OClassDeployment{}
	}
	if d.Plan.Replicas == 0 && len(d.Plan.Clusters) == 0 && len(spec.GetTargetEnvs()) == 0 {
		// Never planned: nothing was selected or filled in yet.
		out := proto.CloneOf(spec)
		out.Functions = derivedFunctions(spec, pkg)
		return out
	}
	out := effectiveSpec(spec, d.Plan.Clusters)
	out.Odgm = ODGMDefaults(out, d.Plan.Clusters)
	out.Functions = derivedFunctions(out, pkg)
	return out
}

// derivedFunctions is spec's functions, or, when it names none, one spec
// per binding of its class in pkg.
func derivedFunctions(spec *pmv1.OClassDeployment, pkg *pmv1.OPackage) []*pmv1.FunctionDeploymentSpec {
	if len(spec.GetFunctions()) > 0 || pkg == nil {
		return spec.GetFunctions()
	}
	cls, err := classOf(pkg, spec.GetClassKey())
	if err != nil {
		return nil
	}
	var out []*pmv1.FunctionDeploymentSpec
	for _, b := range cls.GetFunctionBindings() {
		i := slices.IndexFunc(pkg.GetFunctions(), func(f *pmv1.OFunction) bool { return f.GetKey() == b.GetFunctionKey() })
		if i < 0 {
			continue
		}
		f := pkg.GetFunctions()[i]
		fs := &pmv1.FunctionDeploymentSpec{FunctionKey: f.GetKey(), Description: f.Description}
		if f.ProvisionConfig != nil {
			fs.ProvisionConfig = proto.CloneOf(f.ProvisionConfig)
		}
		if len(f.GetConfig()) > 0 {
			fs.Config = maps.Clone(f.GetConfig())
		}
		if fs.Description != nil {
			fs.Description = proto.String(fs.GetDescription())
		}
		out = append(out, fs)
	}
	return out
}

// answered is d with its Answer set.
func (s *Service) answered(ctx context.Context, d Deployment) Deployment {
	ds := []Deployment{d}
	s.withAnswers(ctx, ds)
	return ds[0]
}

// withAnswers sets the Answer of each deployment, reading each package
// once.
func (s *Service) withAnswers(ctx context.Context, ds []Deployment) {
	pkgs := map[string]*pmv1.OPackage{}
	for i := range ds {
		name := ds[i].Spec.GetPackageName()
		pkg, ok := pkgs[name]
		if !ok {
			if rec, err := s.st.GetPackage(ctx, name); err == nil {
				pkg = rec.Package
			}
			pkgs[name] = pkg
		}
		ds[i].Answer = answerSpec(&ds[i], pkg)
	}
}

// packageDigest fingerprints what a deployment's units take from its
// package: the class, and each function it binds or names, in key order.
// Other classes, other functions and the package's metadata do not count,
// so re-applying an unchanged package (OaaS's apply --overwrite) leaves its
// deployments alone. Never 0, which stands for "unknown".
func packageDigest(pkg *pmv1.OPackage, cls *pmv1.OClass, spec *pmv1.OClassDeployment) int64 {
	used := map[string]bool{}
	for _, b := range cls.GetFunctionBindings() {
		used[b.GetFunctionKey()] = true
	}
	for _, f := range spec.GetFunctions() {
		used[f.GetFunctionKey()] = true
	}
	h := fnv.New64a()
	opts := proto.MarshalOptions{Deterministic: true}
	write := func(m proto.Message) {
		b, _ := opts.Marshal(m) // generated messages always marshal
		_ = binary.Write(h, binary.BigEndian, uint64(len(b)))
		_, _ = h.Write(b)
	}
	write(cls)
	fns := slices.Clone(pkg.GetFunctions())
	slices.SortFunc(fns, func(a, b *pmv1.OFunction) int { return strings.Compare(a.GetKey(), b.GetKey()) })
	for _, f := range fns {
		if used[f.GetKey()] {
			write(f)
		}
	}
	d := int64(h.Sum64() >> 1) //nolint:gosec // 63 bits fit
	if d == 0 {
		d = 1
	}
	return d
}
