package deploy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	commonpb "github.com/oaas/pm/gen/go/oaas/common"
	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/fault"
)

const (
	// maxLabel is the DNS-1123 label limit; a field CRM turns the unit id
	// into a Kubernetes object name and rejects anything longer.
	maxLabel = 63
	// unitHashLen hex characters of the hash end every unit id. 32 bits keep
	// ids of one deployment's clusters (and of keys that sanitize alike)
	// apart; they are not a security boundary.
	unitHashLen = 8
	// unitPrefixMax is what is left for "key-cluster" once "-" + hash fit.
	unitPrefixMax = maxLabel - 1 - unitHashLen
	// unitFallback stands in for a key and cluster with no usable character,
	// so that the id still starts with a letter and keeps the "-hash" shape
	// IsUnitID recognises.
	unitFallback = "unit"
)

// UnitID returns the deterministic DNS-1123 label (≤63, [a-z0-9-], starts and
// ends alphanumeric) a deployment's unit has on a cluster: sanitized
// deployment key + "-" + sanitized cluster, truncated so that "-" + 8 hex
// chars of sha256(key + "\x00" + cluster) fit; always the same for the same
// inputs; different clusters or keys differing only in case/punctuation (e.g.
// "A.b" vs "a-b") get different ids thanks to the hash.
//
// Determinism is what makes retries safe: a CRM deploys idempotently by unit
// id, so a retry with the same id cannot leak a second runtime. The readable
// prefix is for operators looking at Kubernetes objects; the hash carries the
// identity.
func UnitID(deploymentKey, cluster string) string {
	sum := sha256.Sum256([]byte(deploymentKey + "\x00" + cluster))
	hash := hex.EncodeToString(sum[:])[:unitHashLen]

	key, cl := sanitizeLabel(deploymentKey), sanitizeLabel(cluster)
	if len(key)+1+len(cl) > unitPrefixMax {
		// Keep the whole cluster name when the key can still have half the
		// room (cluster names are short and tell units apart at a glance);
		// otherwise both are cut.
		key = truncLabel(key, max(unitPrefixMax-1-len(cl), unitPrefixMax/2))
		cl = truncLabel(cl, unitPrefixMax-1-len(key))
	}
	var prefix string
	switch {
	case key != "" && cl != "":
		prefix = key + "-" + cl
	case key != "":
		prefix = key
	case cl != "":
		prefix = cl
	default:
		prefix = unitFallback
	}
	return prefix + "-" + hash
}

// IsUnitID reports whether id has PM's scheme (ends in "-" + 8 lowercase hex
// and is a valid label) — the reconciler uses it to spot orphans.
func IsUnitID(id string) bool {
	if len(id) < unitHashLen+2 || len(id) > maxLabel || !isLabel(id) {
		return false
	}
	cut := len(id) - unitHashLen - 1
	if id[cut] != '-' {
		return false
	}
	for i := cut + 1; i < len(id); i++ {
		if c := id[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// sanitizeLabel mirrors what a field CRM does to a unit id (lowercase,
// everything outside [a-z0-9-] becomes "-", ends trimmed), collapsing dash
// runs so that "a..b" reads "a-b". Only ASCII letters are lowercased: Unicode
// case mapping could turn a non-ASCII rune (the Kelvin sign) into an ASCII
// letter.
func sanitizeLabel(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	dash := false
	for _, r := range s {
		switch {
		case r >= 'A' && r <= 'Z':
			r += 'a' - 'A'
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		default:
			r = '-'
		}
		if r == '-' {
			if dash || b.Len() == 0 {
				continue
			}
			dash = true
		} else {
			dash = false
		}
		b.WriteRune(r)
	}
	return strings.TrimRight(b.String(), "-")
}

// truncLabel cuts a sanitized label to at most n bytes without leaving a
// trailing dash.
func truncLabel(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.TrimRight(s[:max(n, 0)], "-")
}

// isLabel reports whether s is a DNS-1123 label: 1-63 of [a-z0-9-], starting
// and ending alphanumeric.
func isLabel(s string) bool {
	if s == "" || len(s) > maxLabel || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '-' && (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// EffectiveFunctions returns the function specs a deployment runs. When
// d.Functions is empty, one spec per class function binding (deduplicated by
// function_key, in binding order) derived from the package's OFunction
// (description, provision_config, config); when given, each request spec is
// merged over the package function field by field (request wins;
// provision_config merged per field; config maps merged, request keys win); a
// spec naming a function the package lacks → fault Invalid naming it.
// Per-function nfr_requirements default from d.NfrRequirements (field by
// field when the function gives some).
//
// The result shares no message or map with its inputs, so callers may adjust
// it (BuildUnit sets min_scale) without touching the stored package. As in
// proto3 generally, a request cannot reset a non-optional field
// (max_concurrency, need_http2) to its zero value: zero means "not given".
func EffectiveFunctions(pkg *pmv1.OPackage, cls *pmv1.OClass, d *pmv1.OClassDeployment) ([]*pmv1.FunctionDeploymentSpec, error) {
	fns := make(map[string]*pmv1.OFunction, len(pkg.GetFunctions()))
	for _, f := range pkg.GetFunctions() {
		fns[f.GetKey()] = f
	}
	var out []*pmv1.FunctionDeploymentSpec
	if len(d.GetFunctions()) == 0 {
		seen := map[string]bool{}
		for _, b := range cls.GetFunctionBindings() {
			key := b.GetFunctionKey()
			if seen[key] {
				continue
			}
			seen[key] = true
			f, ok := fns[key]
			if !ok {
				return nil, fault.Invalidf("class %q binds function %q, which package %q does not have",
					cls.GetKey(), key, pkg.GetName())
			}
			out = append(out, mergeFunction(f, nil, d.GetNfrRequirements()))
		}
		return out, nil
	}
	seen := map[string]bool{}
	for i, s := range d.GetFunctions() {
		key := s.GetFunctionKey()
		path := fmt.Sprintf("functions[%d].function_key", i)
		if key == "" {
			return nil, fault.Invalidf("%s: is required", path)
		}
		if seen[key] {
			return nil, fault.Invalidf("%s: function %q is listed more than once", path, key)
		}
		seen[key] = true
		f, ok := fns[key]
		if !ok {
			return nil, fault.Invalidf("%s: %q is not a function of package %q", path, key, pkg.GetName())
		}
		out = append(out, mergeFunction(f, s, d.GetNfrRequirements()))
	}
	return out, nil
}

// mergeFunction lays req (may be nil) over the package function f and
// defaults the NFRs from the deployment's nfr.
func mergeFunction(f *pmv1.OFunction, req *pmv1.FunctionDeploymentSpec, nfr *commonpb.NfrRequirements) *pmv1.FunctionDeploymentSpec {
	out := &pmv1.FunctionDeploymentSpec{
		FunctionKey:     f.GetKey(),
		Description:     f.Description,
		ProvisionConfig: overlay(f.GetProvisionConfig(), req.GetProvisionConfig()),
		NfrRequirements: overlay(nfr, req.GetNfrRequirements()),
		Config:          mergeMaps(f.GetConfig(), req.GetConfig()),
	}
	if out.Description != nil {
		out.Description = proto.String(*out.Description)
	}
	if req != nil {
		if req.Description != nil {
			out.Description = proto.String(req.GetDescription())
		}
		if req.AvailableLocation != nil {
			out.AvailableLocation = proto.String(req.GetAvailableLocation())
		}
		if req.QosRequirement != nil {
			out.QosRequirement = proto.CloneOf(req.QosRequirement)
		}
	}
	return out
}

// overlay returns a copy of base with the fields set in top laid over it
// (proto.Merge semantics: present optional fields and non-zero scalars win,
// maps merge key by key); nil when both are nil. A nil message pointer is
// recognised by its invalid reflection view.
func overlay[M proto.Message](base, top M) M {
	switch {
	case !base.ProtoReflect().IsValid() && !top.ProtoReflect().IsValid():
		var none M
		return none
	case !base.ProtoReflect().IsValid():
		return proto.CloneOf(top)
	}
	out := proto.CloneOf(base)
	if top.ProtoReflect().IsValid() {
		proto.Merge(out, top)
	}
	return out
}

// mergeMaps copies base and lays top over it; nil when the result is empty.
func mergeMaps(base, top map[string]string) map[string]string {
	if len(base)+len(top) == 0 {
		return nil
	}
	out := make(map[string]string, len(base)+len(top))
	maps.Copy(out, base)
	maps.Copy(out, top)
	return out
}

// BuildUnit builds the DeploymentUnit sent to one cluster: id UnitID(d.Key,
// cluster), package_name, class_key, target_env = cluster, functions
// converted from EffectiveFunctions output with provision_config.min_scale =
// replicas (and max_scale raised to replicas when set and lower),
// nfr_requirements, config; function_bindings from the class (access_modifier
// as the upper-case enum string, stateless, parameters); odgm_config from
// d.Odgm (collections, partition_count, shard_type) with replica_count =
// replicas; created_at = now.
//
// min_scale carries the replica count because CRM templates render a
// Deployment's spec.replicas from it. odgm_config is sent only when the
// deployment gives ODGM hints: without them the class has no data grid for
// CRM to render.
func BuildUnit(pkg *pmv1.OPackage, cls *pmv1.OClass, d *pmv1.OClassDeployment, cluster string, replicas int, now time.Time) (*deploymentpb.DeploymentUnit, error) {
	if pkg == nil || cls == nil || d == nil {
		return nil, fault.New(fault.Internal, "building a deployment unit without a package, class or deployment")
	}
	if replicas < 1 || replicas > math.MaxUint32 {
		return nil, fault.New(fault.Internal, "building a deployment unit with %d replicas", replicas)
	}
	if (d.GetPackageName() != "" && d.GetPackageName() != pkg.GetName()) ||
		(d.GetClassKey() != "" && d.GetClassKey() != cls.GetKey()) {
		return nil, fault.New(fault.Internal, "deployment %q names %s/%s but was resolved to %s/%s",
			d.GetKey(), d.GetPackageName(), d.GetClassKey(), pkg.GetName(), cls.GetKey())
	}
	specs, err := EffectiveFunctions(pkg, cls, d)
	if err != nil {
		return nil, err
	}
	r := uint32(replicas)

	u := &deploymentpb.DeploymentUnit{
		Id:          UnitID(d.GetKey(), cluster),
		PackageName: pkg.GetName(),
		ClassKey:    cls.GetKey(),
		TargetEnv:   cluster,
		CreatedAt:   &commonpb.Timestamp{Seconds: now.Unix(), Nanos: int32(now.Nanosecond())},
	}
	for _, s := range specs {
		pc := s.GetProvisionConfig()
		if pc == nil {
			pc = &commonpb.ProvisionConfig{}
		}
		pc.MinScale = proto.Uint32(r)
		if pc.MaxScale != nil && *pc.MaxScale < r {
			pc.MaxScale = proto.Uint32(r)
		}
		u.Functions = append(u.Functions, &deploymentpb.FunctionDeploymentSpec{
			FunctionKey:       s.GetFunctionKey(),
			Description:       s.Description,
			AvailableLocation: s.AvailableLocation,
			NfrRequirements:   s.GetNfrRequirements(),
			ProvisionConfig:   pc,
			Config:            s.GetConfig(),
		})
	}
	for _, b := range cls.GetFunctionBindings() {
		u.FunctionBindings = append(u.FunctionBindings, &deploymentpb.ClassFunctionBinding{
			Name:           b.GetName(),
			FunctionKey:    b.GetFunctionKey(),
			AccessModifier: proto.String(b.GetAccessModifier().String()),
			Stateless:      proto.Bool(b.GetStateless()),
			Parameters:     slices.Clone(b.GetParameters()),
		})
	}
	if o := d.GetOdgm(); o != nil {
		oc := &deploymentpb.OdgmConfig{
			Collections:  slices.Clone(o.GetCollections()),
			ReplicaCount: proto.Uint32(r),
		}
		if o.PartitionCount != nil && o.GetPartitionCount() > 0 {
			oc.PartitionCount = proto.Uint32(uint32(o.GetPartitionCount()))
		}
		if o.GetShardType() != "" {
			oc.ShardType = proto.String(o.GetShardType())
		}
		u.OdgmConfig = oc
	}
	return u, nil
}
