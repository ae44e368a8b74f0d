package app_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	commonpb "github.com/oaas/pm/gen/go/oaas/common"
	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
)

// protocols are the client protocols every Connect scenario runs with.
var protocols = []struct {
	name string
	opts []connect.ClientOption
}{
	{"connect-json", []connect.ClientOption{connect.WithProtoJSON()}},
	{"connect-proto", nil},
	{"grpc", []connect.ClientOption{connect.WithGRPC()}},
	{"grpc-web", []connect.ClientOption{connect.WithGRPCWeb()}},
}

func samplePackage(name string) *pmv1.OPackage {
	return &pmv1.OPackage{
		Name:    name,
		Version: proto.String("1.0.0"),
		Metadata: &pmv1.PackageMetadata{
			Author: proto.String("tests"),
			Tags:   []string{"demo"},
		},
		Functions: []*pmv1.OFunction{{
			Key: "Echo.echo",
			ProvisionConfig: &commonpb.ProvisionConfig{
				ContainerImage: proto.String("registry.local/echo:1"),
				Port:           proto.Uint32(8080),
				CpuRequest:     proto.String("100m"),
			},
			Config: map[string]string{"LOG_LEVEL": "debug"},
		}},
		Classes: []*pmv1.OClass{{
			Key:       "Echo",
			StateSpec: &pmv1.StateSpecification{ConsistencyModel: pmv1.ConsistencyModel_STRONG},
			FunctionBindings: []*pmv1.FunctionBinding{{
				Name: "echo", FunctionKey: "Echo.echo", AccessModifier: pmv1.AccessModifier_INTERNAL,
			}},
		}},
	}
}

func TestConnectPackageLifecycle(t *testing.T) {
	t.Parallel()
	for _, st := range storages {
		for _, p := range protocols {
			t.Run(st+"/"+p.name, func(t *testing.T) {
				t.Parallel()
				e := setup(t, st)
				ctx := context.Background()
				client := pmv1connect.NewPackageServiceClient(e.h2c, e.base, p.opts...)

				created, err := client.CreatePackage(ctx, &pmv1.CreatePackageRequest{Package: samplePackage("echo")})
				if err != nil {
					t.Fatalf("create: %v", err)
				}
				if created.GetRevision() != "1" || created.GetResult().GetStatus() != "created" {
					t.Fatalf("create response = %v", created)
				}
				if created.GetPackage().GetMetadata().GetCreatedAt() == nil {
					t.Fatal("created_at not set by server")
				}
				if created.GetPackage().GetClasses()[0].GetStateSpec().GetSerializationFormat() != "json" {
					t.Fatal("state spec defaults not applied")
				}

				_, err = client.CreatePackage(ctx, &pmv1.CreatePackageRequest{Package: samplePackage("echo")})
				if connect.CodeOf(err) != connect.CodeAlreadyExists {
					t.Fatalf("duplicate create: %v, want AlreadyExists", err)
				}

				got, err := client.GetPackage(ctx, &pmv1.GetPackageRequest{Name: "echo"})
				if err != nil {
					t.Fatalf("get: %v", err)
				}
				if !proto.Equal(got.GetPackage(), created.GetPackage()) {
					t.Fatalf("get = %v\nwant %v", got.GetPackage(), created.GetPackage())
				}

				next := proto.CloneOf(got.GetPackage())
				next.Version = proto.String("2.0.0")
				_, err = client.UpdatePackage(ctx, &pmv1.UpdatePackageRequest{Name: "echo", Package: next, ExpectedRevision: "5"})
				if connect.CodeOf(err) != connect.CodeAborted {
					t.Fatalf("stale update: %v, want Aborted", err)
				}
				upd, err := client.UpdatePackage(ctx, &pmv1.UpdatePackageRequest{Name: "echo", Package: next, ExpectedRevision: got.GetRevision()})
				if err != nil {
					t.Fatalf("update: %v", err)
				}
				if upd.GetRevision() != "2" || upd.GetPackage().GetVersion() != "2.0.0" {
					t.Fatalf("update response = %v", upd)
				}

				_, err = client.CreatePackage(ctx, &pmv1.CreatePackageRequest{Package: &pmv1.OPackage{Name: "bad/name"}})
				var cerr *connect.Error
				if !errors.As(err, &cerr) || cerr.Code() != connect.CodeInvalidArgument {
					t.Fatalf("invalid create: %v", err)
				}

				if _, err := client.DeletePackage(ctx, &pmv1.DeletePackageRequest{Name: "echo"}); err != nil {
					t.Fatalf("delete: %v", err)
				}
				if _, err := client.GetPackage(ctx, &pmv1.GetPackageRequest{Name: "echo"}); connect.CodeOf(err) != connect.CodeNotFound {
					t.Fatalf("get after delete: %v", err)
				}
			})
		}
	}
}

func TestConnectPageTokens(t *testing.T) {
	t.Parallel()
	for _, st := range storages {
		t.Run(st, func(t *testing.T) {
			t.Parallel()
			e := setup(t, st)
			ctx := context.Background()
			client := pmv1connect.NewPackageServiceClient(e.h2c, e.base, connect.WithGRPC())
			var want []string
			for _, n := range []string{"p05", "p01", "p04", "p02", "p03", "p06", "p07"} {
				if _, err := client.CreatePackage(ctx, &pmv1.CreatePackageRequest{Package: &pmv1.OPackage{Name: n}}); err != nil {
					t.Fatal(err)
				}
				want = append(want, n)
			}
			slices.Sort(want)
			var got []string
			token := ""
			pages := 0
			for {
				res, err := client.ListPackages(ctx, &pmv1.ListPackagesRequest{Limit: 3, PageToken: token})
				if err != nil {
					t.Fatal(err)
				}
				pages++
				for _, p := range res.GetItems() {
					got = append(got, p.GetName())
				}
				if token = res.GetNextPageToken(); token == "" {
					break
				}
			}
			if !slices.Equal(got, want) || pages != 3 {
				t.Fatalf("paged names = %v in %d pages, want %v in 3", got, pages, want)
			}
		})
	}
}

func TestReflectionAndGRPCHealth(t *testing.T) {
	t.Parallel()
	e := setup(t, "memory")
	ctx := context.Background()

	stream := grpcreflect.NewClient(e.h2c, e.base).NewStream(ctx)
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatalf("reflection: %v", err)
	}
	for _, want := range []string{pmv1connect.PackageServiceName, pmv1connect.CatalogServiceName, grpchealth.HealthV1ServiceName} {
		if !slices.ContainsFunc(names, func(n protoreflect.FullName) bool { return string(n) == want }) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}

	// A stock grpc-go client, as grpcurl and kubelet probes use.
	conn, err := grpc.NewClient(e.base[len("http://"):], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	res, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("grpc health = %v, %v", res, err)
	}

	var body map[string]any
	e.do("GET", "/health", nil).expect(t, 200).json(t, &body)
	if body["status"] != "healthy" {
		t.Fatalf("/health = %v", body)
	}
}
