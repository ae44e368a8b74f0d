package auth

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	// Registers every oaas.pm.v1 service in the global registry.
	_ "github.com/oaas/pm/gen/go/oaas/pm/v1"
)

// registered lists every RPC of the oaas.pm.v1 package as a procedure.
func registered(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	protoregistry.GlobalFiles.RangeFilesByPackage("oaas.pm.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				out["/"+string(sd.FullName())+"/"+string(sd.Methods().Get(j).Name())] = true
			}
		}
		return true
	})
	if len(out) < 20 {
		t.Fatalf("only %d RPCs registered; is the generated package imported?", len(out))
	}
	return out
}

// TestTableCoversRegistry fails the build when an RPC is added without a
// row in the authorization table.
func TestTableCoversRegistry(t *testing.T) {
	t.Parallel()
	for procedure := range registered(t) {
		if _, ok := Required(procedure); !ok {
			t.Errorf("%s has no row in the authorization table (authz.go)", procedure)
		}
	}
}

// TestTableRowsExist catches typos: a row must name a registered RPC, a
// reserved one, or the health and reflection services.
func TestTableRowsExist(t *testing.T) {
	t.Parallel()
	reg := registered(t)
	for procedure, role := range Table() {
		if role < Viewer || role > Admin {
			t.Errorf("%s: role %v out of range", procedure, role)
		}
		switch {
		case reg[procedure], reserved[procedure]:
		case strings.HasPrefix(procedure, "/grpc.health.v1.Health/"), strings.HasPrefix(procedure, "/grpc.reflection."):
		default:
			t.Errorf("row %s names no registered or reserved RPC", procedure)
		}
		if reserved[procedure] && reg[procedure] {
			t.Logf("%s is registered now; it can leave the reserved list", procedure)
		}
	}
}

// TestTablePolicy pins the role model of the issue: reads are viewer,
// deployment writes deployer, package writes editor, audit and orphan
// deletion admin.
func TestTablePolicy(t *testing.T) {
	t.Parallel()
	for procedure, role := range Table() {
		method := procedure[strings.LastIndex(procedure, "/")+1:]
		var want Role
		switch {
		case procedure == ProcedureListAuditRecords || procedure == ProcedureDeleteOrphan:
			want = Admin
		case strings.HasPrefix(method, "Get"), strings.HasPrefix(method, "List"), strings.HasPrefix(method, "Watch"),
			method == "Check", method == "ServerReflectionInfo":
			want = Viewer
		case strings.Contains(procedure, "DeploymentService/"):
			want = Deployer
		case strings.Contains(procedure, "PackageService/"):
			want = Editor
		default:
			t.Errorf("%s: no policy rule covers it; extend this test", procedure)
			continue
		}
		if role != want {
			t.Errorf("%s: %s, want %s", procedure, role, want)
		}
	}
}
