package cli

import (
	"slices"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
)

// comparablePackage is p as PM stores it, without what the server sets:
// the defaults and server-managed fields PM's registry fills in on every
// write, so a document and its stored copy compare equal when applying the
// document would change nothing. If PM gains a default pmctl does not
// know, apply sends an update that changes nothing: harmless.
func comparablePackage(p *pmv1.OPackage) *pmv1.OPackage {
	p = proto.CloneOf(p)
	if m := p.Metadata; m != nil {
		m.CreatedAt, m.UpdatedAt = nil, nil
		if proto.Size(m) == 0 {
			p.Metadata = nil
		}
	}
	for _, cls := range p.Classes {
		if st := cls.StateSpec; st != nil {
			if st.DefaultProvider == "" {
				st.DefaultProvider = "memory"
			}
			if st.SerializationFormat == "" {
				st.SerializationFormat = "json"
			}
		}
	}
	for i, d := range p.Deployments {
		if d.PackageName == "" {
			d = proto.CloneOf(d)
			d.PackageName = p.Name
		}
		p.Deployments[i] = comparableDeployment(d, nil)
	}
	return p
}

// comparableDeployment is d without its server-managed fields, its target
// clusters as a set. When d names no target, stored's targets (those PM
// chose) stand in for them.
func comparableDeployment(d, stored *pmv1.OClassDeployment) *pmv1.OClassDeployment {
	d = proto.CloneOf(d)
	d.Condition = pmv1.DeploymentCondition_PENDING
	d.Status = nil
	d.CreatedAt, d.UpdatedAt = nil, nil
	if len(d.TargetEnvs) == 0 && stored != nil {
		d.TargetEnvs = slices.Clone(stored.TargetEnvs)
	}
	slices.Sort(d.TargetEnvs)
	d.TargetEnvs = slices.Compact(d.TargetEnvs)
	return d
}

// yamlOf renders m as YAML in PM's JSON model (keys sorted), for diffs.
func yamlOf(m proto.Message) string {
	if m == nil {
		return ""
	}
	raw, err := protoJSON(m)
	if err != nil {
		return ""
	}
	y, err := yaml.JSONToYAML(raw)
	if err != nil {
		return ""
	}
	return string(y)
}

// diffText is a unified diff of two objects' YAML; from is nil for an
// object that does not exist yet.
func diffText(from, to proto.Message, fromName, toName string) (string, error) {
	a, b := yamlOf(from), yamlOf(to)
	if from == nil {
		fromName = "/dev/null"
	}
	return difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: lines(a), B: lines(b),
		FromFile: fromName, ToFile: toName, Context: 3,
	})
}

func lines(s string) []string {
	if s == "" {
		return nil
	}
	out := strings.SplitAfter(s, "\n")
	if out[len(out)-1] == "" {
		return out[:len(out)-1]
	}
	out[len(out)-1] += "\n"
	return out
}
