package api

import (
	"context"
	"fmt"
	"strconv"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/internal/catalog"
	"github.com/oaas/pm/internal/store"
)

// Packages serves oaas.pm.v1.PackageService and CatalogService.
type Packages struct {
	svc  *catalog.Service
	idem *Idempotency
}

var (
	_ pmv1connect.PackageServiceHandler = (*Packages)(nil)
	_ pmv1connect.CatalogServiceHandler = (*Packages)(nil)
)

// NewPackages returns the package handlers.
func NewPackages(svc *catalog.Service, idem *Idempotency) *Packages {
	return &Packages{svc: svc, idem: idem}
}

// setETag exposes the revision to REST clients.
func setETag(ctx context.Context, rev int64) {
	callInfo(ctx).ResponseHeader().Set("ETag", catalog.ETag(rev))
}

// CreatePackage implements PackageService.
func (h *Packages) CreatePackage(ctx context.Context, req *pmv1.CreatePackageRequest) (*pmv1.CreatePackageResponse, error) {
	res, err := idempotent(ctx, h.idem, "CreatePackage", req.GetIdempotencyKey(), req, func(ctx context.Context) (*pmv1.CreatePackageResponse, error) {
		rec, err := h.svc.Create(ctx, req.GetPackage())
		if err != nil {
			return nil, err
		}
		name := rec.Package.GetName()
		return &pmv1.CreatePackageResponse{
			Result:   &pmv1.WriteResult{Id: name, Status: "created", Message: fmt.Sprintf("package %q created", name)},
			Package:  rec.Package,
			Revision: catalog.FormatRevision(rec.Revision),
		}, nil
	})
	if err != nil {
		return nil, err
	}
	callInfo(ctx).ResponseHeader().Set("ETag", fmt.Sprintf("%q", res.GetRevision()))
	return res, nil
}

// GetPackage implements PackageService.
func (h *Packages) GetPackage(ctx context.Context, req *pmv1.GetPackageRequest) (*pmv1.GetPackageResponse, error) {
	rec, err := h.svc.Get(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	setETag(ctx, rec.Revision)
	return &pmv1.GetPackageResponse{Package: rec.Package, Revision: catalog.FormatRevision(rec.Revision)}, nil
}

// ListPackages implements PackageService.
func (h *Packages) ListPackages(ctx context.Context, req *pmv1.ListPackagesRequest) (*pmv1.ListPackagesResponse, error) {
	q := catalog.ListQuery{
		NamePattern: req.GetNamePattern(),
		Tags:        req.GetTags(),
		Limit:       int(req.GetLimit()),
		Offset:      int(req.GetOffset()),
		PageToken:   req.GetPageToken(),
	}
	if req.Disabled != nil {
		q.Disabled = req.Disabled
	}
	recs, next, err := h.svc.List(ctx, q)
	if err != nil {
		return nil, err
	}
	setNextPage(ctx, next)
	return &pmv1.ListPackagesResponse{Items: packagesOf(recs), NextPageToken: next}, nil
}

// setNextPage tells REST clients, whose list bodies are bare arrays, that
// another page exists.
func setNextPage(ctx context.Context, next string) {
	if next != "" {
		callInfo(ctx).ResponseHeader().Set("X-Next-Page-Token", next)
	}
}

func packagesOf(recs []store.Package) []*pmv1.OPackage {
	out := make([]*pmv1.OPackage, len(recs))
	for i, r := range recs {
		out[i] = r.Package
	}
	return out
}

// UpdatePackage implements PackageService.
// An Idempotency-Key header makes a retried update apply once.
func (h *Packages) UpdatePackage(ctx context.Context, req *pmv1.UpdatePackageRequest) (*pmv1.UpdatePackageResponse, error) {
	expected := ifMatch(ctx, req.GetExpectedRevision())
	res, err := idempotent(ctx, h.idem, "UpdatePackage", "", req, func(ctx context.Context) (*pmv1.UpdatePackageResponse, error) {
		rec, err := h.svc.Update(ctx, req.GetName(), req.GetPackage(), expected)
		if err != nil {
			return nil, err
		}
		return &pmv1.UpdatePackageResponse{
			Result: &pmv1.WriteResult{
				Id: rec.Package.GetName(), Status: "updated",
				Message: "package " + strconv.Quote(rec.Package.GetName()) + " updated",
			},
			Package:  rec.Package,
			Revision: catalog.FormatRevision(rec.Revision),
		}, nil
	})
	if err != nil {
		return nil, err
	}
	callInfo(ctx).ResponseHeader().Set("ETag", fmt.Sprintf("%q", res.GetRevision()))
	return res, nil
}

// DeletePackage implements PackageService.
func (h *Packages) DeletePackage(ctx context.Context, req *pmv1.DeletePackageRequest) (*pmv1.DeletePackageResponse, error) {
	if err := h.svc.Delete(ctx, req.GetName(), ifMatch(ctx, ""), req.GetCascade()); err != nil {
		return nil, err
	}
	return &pmv1.DeletePackageResponse{}, nil
}

// ListClasses implements CatalogService.
func (h *Packages) ListClasses(ctx context.Context, req *pmv1.ListClassesRequest) (*pmv1.ListClassesResponse, error) {
	items, owners, err := h.svc.ListClasses(ctx, req.GetPackageName(), req.GetFilter())
	if err != nil {
		return nil, err
	}
	return &pmv1.ListClassesResponse{Items: items, PackageNames: owners}, nil
}

// ListFunctions implements CatalogService.
func (h *Packages) ListFunctions(ctx context.Context, req *pmv1.ListFunctionsRequest) (*pmv1.ListFunctionsResponse, error) {
	items, owners, err := h.svc.ListFunctions(ctx, req.GetPackageName(), req.GetFilter())
	if err != nil {
		return nil, err
	}
	return &pmv1.ListFunctionsResponse{Items: items, PackageNames: owners}, nil
}
