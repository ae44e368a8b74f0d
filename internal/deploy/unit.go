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
	"google.golang.org/protobuf/types/known/structpb"

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

// BuildUnit builds the DeploymentUnit sent to one cluster, in the shape the
// current (second) CRM generation reads; the cluster client narrows it for a
// first-generation CRM (cluster.UnitFor). The unit has:
//   - id UnitID(d.Key, cluster), package_name, class_key, target_env =
//     cluster, created_at = now;
//   - functions converted from EffectiveFunctions with
//     provision_config.min_scale = replicas (max_scale raised to replicas
//     when set and lower), nfr_requirements and config;
//   - function_bindings from the class, access_modifier spelled as upstream
//     does ("Public", "Internal", "Private"), stateless always set;
//   - selected_template = d.env_templates[cluster] when present;
//   - telemetry when d.telemetry is given, enabled defaulting to true;
//   - odgm_config when d.odgm is given: collections, partition_count,
//     shard_type and log copied, replica_count = replicas, env_node_ids for
//     every environment and odgm_node_id = this cluster's first id,
//     collection_assignments (shardAssignments), and, when the class has
//     bindings, invocations with one route per binding whose function is
//     deployed, keyed by binding name, url left to the CRM (function_key
//     set, stateless as bound, standby false).
//
// min_scale carries the replica count because CRM templates render a
// Deployment's spec.replicas from it. odgm_config is sent only when the
// deployment gives ODGM hints: without them the class has no data grid for
// CRM to render. A malformed node id is fault.Invalid naming it.
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
		Telemetry:   telemetrySpec(d.GetTelemetry()),
	}
	if tpl, ok := d.GetEnvTemplates()[cluster]; ok && tpl != "" {
		u.SelectedTemplate = proto.String(tpl)
	}
	deployed := make(map[string]bool, len(specs))
	for _, s := range specs {
		deployed[s.GetFunctionKey()] = true
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
			AccessModifier: proto.String(accessModifierWord(b.GetAccessModifier())),
			Stateless:      proto.Bool(b.GetStateless()),
			Parameters:     slices.Clone(b.GetParameters()),
		})
	}
	if o := d.GetOdgm(); o != nil {
		oc := &deploymentpb.OdgmConfig{
			Collections:  slices.Clone(o.GetCollections()),
			ReplicaCount: proto.Uint32(r),
		}
		partitions := uint32(1)
		if o.PartitionCount != nil && o.GetPartitionCount() > 0 {
			partitions = uint32(o.GetPartitionCount())
			oc.PartitionCount = proto.Uint32(partitions)
		}
		if o.GetShardType() != "" {
			oc.ShardType = proto.String(o.GetShardType())
		}
		if o.Log != nil {
			oc.Log = proto.String(o.GetLog())
		}
		nodeIDs, err := envNodeIDs(o)
		if err != nil {
			return nil, err
		}
		if len(nodeIDs) > 0 {
			oc.EnvNodeIds = make(map[string]*deploymentpb.OdgmNodeIds, len(nodeIDs))
			for env, ids := range nodeIDs {
				oc.EnvNodeIds[env] = &deploymentpb.OdgmNodeIds{Ids: ids}
			}
			if ids := nodeIDs[cluster]; len(ids) > 0 {
				oc.OdgmNodeId = proto.Uint64(ids[0])
			}
		}
		if assign := shardAssignments(int(partitions), replicas, nodeIDs); len(oc.Collections) > 0 && assign != nil {
			oc.CollectionAssignments = make(map[string]*deploymentpb.CollectionShardAssignments, len(oc.Collections))
			for _, c := range oc.Collections {
				oc.CollectionAssignments[c] = &deploymentpb.CollectionShardAssignments{Assignments: cloneAll(assign)}
			}
		}
		if len(cls.GetFunctionBindings()) > 0 {
			routes := map[string]*deploymentpb.FunctionRoute{}
			for _, b := range cls.GetFunctionBindings() {
				if !deployed[b.GetFunctionKey()] {
					continue
				}
				routes[b.GetName()] = &deploymentpb.FunctionRoute{
					Stateless:   proto.Bool(b.GetStateless()),
					Standby:     proto.Bool(false),
					FunctionKey: proto.String(b.GetFunctionKey()),
				}
			}
			oc.Invocations = &deploymentpb.InvocationRoutes{FnRoutes: routes}
		}
		u.OdgmConfig = oc
	}
	return u, nil
}

// accessModifierWord spells an access modifier as upstream CRMs read it
// (Rust's debug spelling: "Public", "Internal", "Private").
func accessModifierWord(m pmv1.AccessModifier) string {
	name := m.String()
	return name[:1] + strings.ToLower(name[1:])
}

// telemetrySpec maps a deployment's telemetry to the CRM's; nil when not
// configured. Giving telemetry at all turns it on unless enabled says off.
func telemetrySpec(t *pmv1.TelemetryConfig) *commonpb.TelemetrySpec {
	if t == nil {
		return nil
	}
	out := &commonpb.TelemetrySpec{
		Enabled:            t.Enabled == nil || t.GetEnabled(),
		ResourceAttributes: maps.Clone(t.GetResourceAttributes()),
	}
	if t.Traces != nil {
		out.Traces = proto.Bool(t.GetTraces())
	}
	if t.Metrics != nil {
		out.Metrics = proto.Bool(t.GetMetrics())
	}
	if t.Logs != nil {
		out.Logs = proto.Bool(t.GetLogs())
	}
	if t.SamplingRate != nil {
		out.SamplingRate = proto.Float64(t.GetSamplingRate())
	}
	if t.ServiceName != nil {
		out.ServiceName = proto.String(t.GetServiceName())
	}
	return out
}

// maxNodeID bounds node ids: JSON carries them as numbers, exact up to 2^53.
const maxNodeID = 1 << 53

// envNodeIDs reads odgm.env_node_ids (environment → bare JSON array of
// ids); a value that is not a non-negative integer is fault.Invalid.
func envNodeIDs(o *pmv1.OdgmDataSpec) (map[string][]uint64, error) {
	if len(o.GetEnvNodeIds()) == 0 {
		return nil, nil
	}
	out := make(map[string][]uint64, len(o.GetEnvNodeIds()))
	for env, list := range o.GetEnvNodeIds() {
		ids := make([]uint64, 0, len(list.GetValues()))
		for i, v := range list.GetValues() {
			n, isNum := v.GetKind().(*structpb.Value_NumberValue)
			if !isNum || n.NumberValue < 0 || n.NumberValue >= maxNodeID || n.NumberValue != math.Trunc(n.NumberValue) {
				return nil, fault.Invalidf("odgm.env_node_ids[%q][%d]: a node id is an integer in [0, 2^53)", env, i)
			}
			ids = append(ids, uint64(n.NumberValue))
		}
		out[env] = ids
	}
	return out, nil
}

// shardAssignments places the shards of one collection (every collection
// gets the same list), as upstream PM does: members are every environment's
// node ids, sorted and de-duplicated; for each partition the primary is the
// member with the fewest primaries so far (lowest index on ties), its
// replicas are the next replicas members from there (wrapping around), and
// shard ids count 1, 2, ... across the collection, the partition's first
// being its primary. Nil when there is no node id.
//
// One departure: the replica count is capped at the number of members.
// Upstream would list a node more than once, putting two replicas of a
// partition on one node, which only its own plan (one replica per
// environment) never asks for; PM's replica count can exceed the
// environments (a STRONG class on one cluster has 3).
func shardAssignments(partitions, replicas int, nodeIDs map[string][]uint64) []*deploymentpb.ShardAssignmentSpec {
	var members []uint64
	for _, ids := range nodeIDs {
		members = append(members, ids...)
	}
	slices.Sort(members)
	members = slices.Compact(members)
	if len(members) == 0 || partitions < 1 || replicas < 1 {
		return nil
	}
	replicas = min(replicas, len(members))
	primaries := make([]int, len(members))
	next := uint64(1)
	out := make([]*deploymentpb.ShardAssignmentSpec, 0, partitions)
	for range partitions {
		p := 0
		for i := range primaries {
			if primaries[i] < primaries[p] {
				p = i
			}
		}
		primaries[p]++
		spec := &deploymentpb.ShardAssignmentSpec{Primary: proto.Uint64(next)}
		for i := range replicas {
			spec.Replica = append(spec.Replica, members[(p+i)%len(members)])
			spec.ShardIds = append(spec.ShardIds, next)
			next++
		}
		out = append(out, spec)
	}
	return out
}

// cloneAll deep-copies a list of messages.
func cloneAll[M proto.Message](in []M) []M {
	out := make([]M, len(in))
	for i, m := range in {
		out[i] = proto.CloneOf(m)
	}
	return out
}
