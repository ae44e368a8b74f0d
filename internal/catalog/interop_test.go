package catalog

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
)

// TestCurrentGenerationFields: the fields the current OaaS generation added
// to deployments are checked as PM checks its own (OaaS itself checks
// none), each problem named by its path.
func TestCurrentGenerationFields(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		edit func(d *pmv1.OClassDeployment)
		want string // "" means valid
	}{
		{"as set up", func(*pmv1.OClassDeployment) {}, ""},
		{"sampling rate above 1", func(d *pmv1.OClassDeployment) { d.Telemetry.SamplingRate = proto.Float64(1.5) },
			"telemetry.sampling_rate: 1.5 is out of range [0,1]"},
		{"sampling rate negative", func(d *pmv1.OClassDeployment) { d.Telemetry.SamplingRate = proto.Float64(-0.1) },
			"telemetry.sampling_rate: -0.1 is out of range [0,1]"},
		{"sampling rate bounds", func(d *pmv1.OClassDeployment) { d.Telemetry.SamplingRate = proto.Float64(1) }, ""},
		{"blank service name", func(d *pmv1.OClassDeployment) { d.Telemetry.ServiceName = proto.String(" ") },
			"telemetry.service_name: must not be empty when set"},
		{"empty telemetry", func(d *pmv1.OClassDeployment) { d.Telemetry = &pmv1.TelemetryConfig{} }, ""},
		{"available env with a space", func(d *pmv1.OClassDeployment) { d.AvailableEnvs = []string{"oaas 1"} },
			`available_envs[0]: "oaas 1" is not a cluster name ([A-Za-z0-9_-])`},
		{"available env repeated", func(d *pmv1.OClassDeployment) { d.AvailableEnvs = []string{"a", "a"} },
			`available_envs[1]: duplicate cluster "a"`},
		{"OaaS cluster names", func(d *pmv1.OClassDeployment) { d.AvailableEnvs = []string{"oaas-1", "Edge_2"} }, ""},
		{"target env with a dot", func(d *pmv1.OClassDeployment) { d.TargetEnvs = []string{"a.b"} },
			`target_envs[0]: "a.b" is not a cluster name`},
		{"empty template", func(d *pmv1.OClassDeployment) { d.EnvTemplates["east"] = "" },
			`env_templates["east"]: template name must not be empty`},
		{"template for a bad name", func(d *pmv1.OClassDeployment) { d.EnvTemplates["a/b"] = "t" },
			`env_templates["a/b"]: "a/b" is not a cluster name`},
		{"two-line log filter", func(d *pmv1.OClassDeployment) { d.Odgm.Log = proto.String("info\nx") },
			"odgm.log: must be one line"},
		{"empty log filter", func(d *pmv1.OClassDeployment) { d.Odgm.Log = proto.String("") },
			"odgm.log: must not be empty when set"},
		{"node id at 2^53", func(d *pmv1.OClassDeployment) { d.Odgm.EnvNodeIds["east"] = nodeIDs(1 << 53) },
			`odgm.env_node_ids["east"][0]: 9.007199254740992e+15 is not a whole number in [0, 2^53)`},
		{"node id below 2^53", func(d *pmv1.OClassDeployment) { d.Odgm.EnvNodeIds["east"] = nodeIDs(1<<53 - 1) }, ""},
		{"fractional node id", func(d *pmv1.OClassDeployment) { d.Odgm.EnvNodeIds["east"] = nodeIDs(1.5) },
			`odgm.env_node_ids["east"][0]: 1.5 is not a whole number`},
		{"negative node id", func(d *pmv1.OClassDeployment) { d.Odgm.EnvNodeIds["east"] = nodeIDs(-1) },
			`odgm.env_node_ids["east"][0]: -1 is not a whole number`},
		{"node id as a string", func(d *pmv1.OClassDeployment) {
			d.Odgm.EnvNodeIds["east"] = &structpb.ListValue{Values: []*structpb.Value{structpb.NewStringValue("7")}}
		}, `odgm.env_node_ids["east"][0]: must be a number`},
		{"node id in two clusters", func(d *pmv1.OClassDeployment) { d.Odgm.EnvNodeIds["west"] = nodeIDs(5, 1) },
			`odgm.env_node_ids["west"][1]: node id 1 is also listed for "east"`},
		{"node ids for a bad name", func(d *pmv1.OClassDeployment) { d.Odgm.EnvNodeIds[""] = nodeIDs(9) },
			`odgm.env_node_ids[""]: must not be empty`},
		{"the same function spec twice", func(d *pmv1.OClassDeployment) {
			d.Functions = append(d.Functions, proto.CloneOf(d.Functions[0]))
		}, ""},
		{"a function twice, differently", func(d *pmv1.OClassDeployment) {
			other := proto.CloneOf(d.Functions[0])
			other.Description = proto.String("other")
			d.Functions = append(d.Functions, other)
		}, `functions[1].function_key: duplicate function "run" with different settings`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := setupDeployment(t)
			c.edit(d)
			err := ValidateDeployment(d)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("rejected: %v", err)
			case c.want != "" && err == nil:
				t.Errorf("accepted, want %q", c.want)
			case c.want != "" && !strings.Contains(err.Error(), c.want):
				t.Errorf("error %q does not say %q", err, c.want)
			}
			// Embedded in a package, the same problem is reported under
			// deployments[0].
			pkg := setup(t)
			emb := proto.CloneOf(d)
			emb.PackageName = ""
			pkg.Deployments[0] = emb
			perr := ValidatePackage(pkg)
			if c.want != "" && (perr == nil || !strings.Contains(perr.Error(), "deployments[0]."+c.want)) {
				t.Errorf("embedded: %v, want deployments[0].%s", perr, c.want)
			}
			if c.want == "" && perr != nil {
				t.Errorf("embedded: rejected: %v", perr)
			}
		})
	}
}
