package cluster

import (
	"context"
	"strings"
	"sync"

	"connectrpc.com/connect"
	"github.com/sony/gobreaker/v2"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	topologypb "github.com/oaas/pm/gen/go/oaas/topology"
)

// Generation is the CRM wire generation a cluster speaks. The generations
// share every service and message but one: ListClassRuntimes and
// GetClassRuntime answer DeploymentUnits from the first and
// oaas.runtime.ClassRuntimeSummary messages from the second, under the same
// field number, and nothing on the wire says which (upstream-head-delta.md
// §2.7).
type Generation int

// The generations. The zero value is "not known yet".
const (
	// GenerationUnknown means PM has not been able to tell yet.
	GenerationUnknown Generation = 0
	// Generation1 is the CRM of crm-wire-contract.md (upstream c19a68a).
	Generation1 Generation = 1
	// Generation2 is the current upstream CRM (upstream-head-delta.md §2).
	Generation2 Generation = 2
)

// String is "1", "2" or "unknown".
func (g Generation) String() string {
	switch g {
	case Generation1:
		return "1"
	case Generation2:
		return "2"
	}
	return "unknown"
}

// The ways PM learns a cluster's generation, most explicit first.
const (
	// GenerationPinned is an operator's CRM_<NAME>_GENERATION.
	GenerationPinned = "pinned"
	// GenerationFromServices means oaas.topology.TopologyService answered
	// (second generation) or was unimplemented (first).
	GenerationFromServices = "services"
	// GenerationFromCRMVersion means GetEnvHealth carried no crm_version,
	// which only first-generation CRMs leave out.
	GenerationFromCRMVersion = "crm_version"
	// GenerationFromListItems means the field-presence rule on the items of
	// a ListClassRuntimes or GetClassRuntime answer.
	GenerationFromListItems = "list_items"
)

// genState is what a client knows of its CRM's generation.
type genState struct {
	mu     sync.Mutex
	gen    Generation
	source string
	pinned bool
	// version is the crm_version the generation was learned under
	// (hasVersion false: none reported); a change means the CRM was
	// replaced, perhaps by the other generation.
	version    string
	hasVersion bool
	// stale asks for detection at the next answered health check: the CRM
	// was unreachable, and may come back as something else.
	stale bool
}

func (s *genState) get() (Generation, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen, s.source
}

// learn records a generation, unless an operator pinned one.
func (s *genState) learn(g Generation, source string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pinned || g == GenerationUnknown {
		return
	}
	s.gen, s.source = g, source
}

// Generation returns the generation PM reads the cluster's CRM with and how
// it was learned ("" while unknown).
func (c *Client) Generation() (Generation, string) { return c.gen.get() }

// observeHealth updates the generation after a health check and returns h
// with it. Detection runs when the generation is unknown, when the CRM's
// version changed, or when the CRM answers again after being unreachable;
// it is cheap (one call) and runs inside the health check it follows, so its
// result is cached with that health.
func (c *Client) observeHealth(ctx context.Context, h Health) Health {
	s := &c.gen
	s.mu.Lock()
	detect := false
	switch {
	case s.pinned:
	case h.Source == "":
		// Unreachable, or no health service: nothing learned, and whatever
		// answers next may be a different CRM.
		s.stale = true
	default:
		version, has := "", h.CRMVersion != nil
		if has {
			version = *h.CRMVersion
		}
		versionChanged := h.Source == SourceCRMInfo && (has != s.hasVersion || version != s.version)
		detect = s.gen == GenerationUnknown || s.stale || versionChanged
		if h.Source == SourceCRMInfo {
			s.version, s.hasVersion = version, has
		}
	}
	s.mu.Unlock()
	if detect {
		c.detect(ctx, h)
	}
	h.Generation, h.GenerationSource = s.get()
	return h
}

// detect asks the CRM for an explicit sign of its generation: whether it
// serves TopologyService, which only the second generation does. When that
// says nothing (the call failed on the way), a GetEnvHealth without
// crm_version marks the first generation. Otherwise the generation stays as
// it was, and the next list answer's items decide (readList).
func (c *Client) detect(ctx context.Context, h Health) {
	g := c.servesTopology(ctx)
	source := GenerationFromServices
	if g == GenerationUnknown && h.Source == SourceCRMInfo && h.CRMVersion == nil {
		g, source = Generation1, GenerationFromCRMVersion
	}
	c.gen.mu.Lock()
	c.gen.stale = g == GenerationUnknown
	c.gen.mu.Unlock()
	if g != GenerationUnknown {
		prev, _ := c.gen.get()
		c.gen.learn(g, source)
		if prev != g {
			c.log.Info("CRM generation detected", "generation", g.String(), "source", source)
		}
	}
}

// servesTopology calls TopologyService/GetTopology once. UNIMPLEMENTED is a
// first-generation CRM; any answer about the request (OK, or an error the
// service itself gave) is a second-generation one; a failure on the way
// (unreachable, timed out, an unknown error from something in between) says
// nothing. It bypasses the breaker: a topology error is no sign of a sick
// CRM, and it runs only right after a health check succeeded.
func (c *Client) servesTopology(ctx context.Context) Generation {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	_, err := c.topology.GetTopology(ctx, &topologypb.TopologyRequest{})
	if err == nil {
		return Generation2
	}
	switch connect.CodeOf(err) {
	case connect.CodeUnimplemented:
		return Generation1
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeCanceled, connect.CodeUnknown:
		return GenerationUnknown
	}
	return Generation2
}

// generationForDeploy returns the generation to shape a unit for, detecting
// it first when no health check has yet (a deploy before the first health
// check, or after a failed detection).
func (c *Client) generationForDeploy(ctx context.Context) Generation {
	if g, _ := c.gen.get(); g != GenerationUnknown || c.breaker.State() != gobreaker.StateClosed {
		// An open breaker answers the deploy at once; detection would only
		// wait for a CRM known to be failing.
		return g
	}
	if g := c.servesTopology(ctx); g != GenerationUnknown {
		c.gen.learn(g, GenerationFromServices)
	}
	g, _ := c.gen.get()
	return g
}

// UnitFor returns unit shaped for a CRM of generation g; unit itself is not
// changed. Units are built in the second generation's shape, which a
// first-generation CRM reads field by field, skipping what it does not
// know, with one exception: it copies FunctionRoute.url verbatim, so a
// route that leaves the URL to the CRM (url empty, function_key set) would
// become a route to nowhere. For the first generation such routes are left
// out, as that generation's PM sent none; routes with a URL stay. Unknown
// is treated as the second generation, which the builder targets.
func UnitFor(g Generation, unit *deploymentpb.DeploymentUnit) *deploymentpb.DeploymentUnit {
	inv := unit.GetOdgmConfig().GetInvocations()
	if g != Generation1 || inv == nil {
		return unit
	}
	hasEmpty := false
	for _, r := range inv.GetFnRoutes() {
		if r.GetUrl() == "" {
			hasEmpty = true
			break
		}
	}
	if !hasEmpty {
		return unit
	}
	out := proto.CloneOf(unit)
	routes := out.GetOdgmConfig().GetInvocations()
	for name, r := range routes.GetFnRoutes() {
		if r.GetUrl() == "" {
			delete(routes.FnRoutes, name)
		}
	}
	if len(routes.GetFnRoutes()) == 0 && len(routes.GetDisabledFn()) == 0 {
		out.OdgmConfig.Invocations = nil
	}
	return out
}

// ClassifyItem applies the field-presence rule to one encoded item of a
// ListClassRuntimesResponse (or the deployment of a GetClassRuntimeResponse)
// and says which generation sent it; GenerationUnknown when the item carries
// nothing that tells, or contradicts itself.
//
// The rule compares the two messages that share the wire position
// (DeploymentUnit and oaas.runtime.ClassRuntimeSummary) where they differ:
//   - field 4 is reserved in a unit and the qualified class_key of a summary;
//   - field 10 is unused in a unit and created_at in a summary;
//   - field 12 is the telemetry message of a unit and the partition_count
//     varint of a summary;
//   - field 7 is a unit's function binding (name and function_key strings,
//     stateless a varint) and a summary's status (condition and phase
//     varints, last_updated a string);
//   - field 8 is a unit's created_at Timestamp (varints) and a summary's
//     nfr_compliance (strings);
//   - field 9 is a unit's odgm_config (partition and replica counts are
//     varints at 2 and 3) and a summary's resource reference (strings).
//
// A second-generation CRM always sends fields 4, 7, 10 and 11, so its items
// are recognised whatever else they hold; the sparse items of a field
// first-generation CRM (1, 3, 6 and a Timestamp at 8) are recognised by
// field 8.
func ClassifyItem(b []byte) Generation {
	var one, two bool
	vote := func(g Generation) {
		switch g {
		case Generation1:
			one = true
		case Generation2:
			two = true
		}
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return GenerationUnknown
		}
		b = b[n:]
		var val []byte
		if typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return GenerationUnknown
			}
			val, n = v, m
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return GenerationUnknown
			}
		}
		b = b[n:]
		switch num {
		case 4, 10:
			vote(Generation2)
		case 12:
			if typ == protowire.VarintType {
				vote(Generation2)
			} else {
				vote(Generation1)
			}
		case 7:
			vote(nested(val, typ, map[protowire.Number][2]Generation{
				1: {Generation1, Generation2}, // name (string) or condition (varint)
				2: {Generation1, Generation2}, // function_key or phase
				4: {Generation2, Generation1}, // last_updated (string) or stateless (varint)
			}))
		case 8:
			vote(nested(val, typ, map[protowire.Number][2]Generation{
				1: {Generation2, Generation1}, // overall_status (string) or seconds (varint)
				2: {Generation2, Generation1}, // throughput_status or nanos
			}))
		case 9:
			vote(nested(val, typ, map[protowire.Number][2]Generation{
				2: {Generation2, Generation1}, // name (string) or partition_count (varint)
				3: {Generation2, Generation1}, // namespace or replica_count
			}))
		}
	}
	switch {
	case one && !two:
		return Generation1
	case two && !one:
		return Generation2
	}
	return GenerationUnknown
}

// nested votes on a length-delimited field by its own fields' wire types:
// for each field number of rules, [0] is the generation when that field is
// length-delimited, [1] when it is a varint.
func nested(val []byte, typ protowire.Type, rules map[protowire.Number][2]Generation) Generation {
	if typ != protowire.BytesType {
		return GenerationUnknown
	}
	var got Generation
	for len(val) > 0 {
		num, t, n := protowire.ConsumeTag(val)
		if n < 0 {
			return GenerationUnknown
		}
		val = val[n:]
		n = protowire.ConsumeFieldValue(num, t, val)
		if n < 0 {
			return GenerationUnknown
		}
		val = val[n:]
		rule, ok := rules[num]
		var g Generation
		switch {
		case !ok:
			continue
		case t == protowire.BytesType:
			g = rule[0]
		case t == protowire.VarintType:
			g = rule[1]
		default:
			continue
		}
		if got != GenerationUnknown && got != g {
			return GenerationUnknown
		}
		got = g
	}
	return got
}

// classifyResponse applies ClassifyItem to every field-1 item of an encoded
// list or get answer: the generation all telling items agree on, else
// GenerationUnknown.
func classifyResponse(b []byte) Generation {
	var got Generation
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return GenerationUnknown
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			item, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return GenerationUnknown
			}
			b = b[m:]
			g := ClassifyItem(item)
			if g == GenerationUnknown {
				continue
			}
			if got != GenerationUnknown && got != g {
				return GenerationUnknown
			}
			got = g
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return GenerationUnknown
		}
		b = b[n:]
	}
	return got
}

// splitClassKey turns a second-generation "<package>.<class>" key back into
// PM's package and class; a key without the package prefix is split at its
// last dot, as upstream derives package_name, and a key without any dot is
// a bare class.
func splitClassKey(pkg, qualified string) (string, string) {
	if pkg != "" && strings.HasPrefix(qualified, pkg+".") {
		return pkg, qualified[len(pkg)+1:]
	}
	if i := strings.LastIndexByte(qualified, '.'); i > 0 {
		if pkg == "" {
			pkg = qualified[:i]
		}
		return pkg, qualified[i+1:]
	}
	return pkg, qualified
}
