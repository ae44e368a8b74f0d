package audit_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/audit"
)

func TestTarget(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		msg  proto.Message
		want string
	}{
		{"top-level name", &pmv1.DeletePackageRequest{Name: "shop"}, "shop"},
		{"name before the body's", &pmv1.UpdatePackageRequest{Name: "shop", Package: &pmv1.OPackage{Name: "other"}}, "shop"},
		{"package.name", &pmv1.CreatePackageRequest{Package: &pmv1.OPackage{Name: "shop"}, IdempotencyKey: "k"}, "shop"},
		{"deployment.key", &pmv1.CreateDeploymentRequest{Deployment: &pmv1.OClassDeployment{Key: "shop-cart"}}, "shop-cart"},
		{"key", &pmv1.DeleteDeploymentRequest{Key: "shop-cart", Cluster: "eu"}, "shop-cart"},
		{"nothing named", &pmv1.ListPackagesRequest{NamePattern: "s*", Tags: []string{"a"}}, ""},
		{"empty body", &pmv1.CreatePackageRequest{}, ""},
		{"nil", nil, ""},
		{"typed nil", (*pmv1.DeletePackageRequest)(nil), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := audit.Target(tc.msg); got != tc.want {
				t.Errorf("Target = %q, want %q", got, tc.want)
			}
		})
	}
}
