package deploy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/catalog"
	"github.com/oaas/pm/internal/correlation"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// This file is what the package registry calls (catalog.Hooks): checks
// before a package write, staging and deploying embedded deployments, and
// the package-delete policy.

// pageSize is how many rows one read of a background pass or a check
// takes at a time.
const pageSize = 500

// CheckPackageWrite checks a package about to be written (created or
// updated) against the deployments, through r (the write's transaction, or
// the store):
//
//   - each embedded deployment passes the checks a standalone create
//     passes before planning (its class, function overrides and target
//     clusters: 400 naming every problem), and its key is not another
//     package's deployment (409);
//   - no deployment of the package uses a class or function the write
//     removes (409 listing them), as a package delete refuses while
//     deployments exist.
func (s *Service) CheckPackageWrite(ctx context.Context, r store.Tx, pkg *pmv1.OPackage) error {
	var problems catalog.Problems
	var conflicts []string
	for i, d := range pkg.GetDeployments() {
		path := fmt.Sprintf("deployments[%d]", i)
		d = embedded(pkg, d)
		if d.GetPackageName() != pkg.GetName() {
			problems.Addf(path+".package_name", "%q is not this package (%q)", d.GetPackageName(), pkg.GetName())
			continue
		}
		if cls, err := classOf(pkg, d.GetClassKey()); err != nil {
			problems.Addf(path+".class_key", "class %q not found in package %q", d.GetClassKey(), pkg.GetName())
		} else {
			catalog.CheckFunctionSpecs(&problems, path, d, pkg, cls)
		}
		if err := s.checkPlacement(d); err != nil {
			problems.Addf(path, "%s", err.Error())
		}
		cur, err := r.GetDeployment(ctx, d.GetKey())
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		case cur.PackageName != pkg.GetName():
			conflicts = append(conflicts, fmt.Sprintf("%s: key %q is a deployment of package %q", path, d.GetKey(), cur.PackageName))
		}
	}
	if err := problems.Err("package"); err != nil {
		return err
	}
	if len(conflicts) > 0 {
		return fault.New(fault.Conflict, "package %q: %s", pkg.GetName(), strings.Join(conflicts, "; "))
	}
	used, err := s.removedInUse(ctx, r, pkg)
	if err != nil || len(used) == 0 {
		return err
	}
	return fault.New(fault.Conflict, "package %q: the write removes what deployments use: %s; delete or change those deployments first",
		pkg.GetName(), strings.Join(used, "; "))
}

// removedInUse lists, for the deployments of pkg's name, the class or
// functions they use that pkg does not have.
func (s *Service) removedInUse(ctx context.Context, r store.Tx, pkg *pmv1.OPackage) ([]string, error) {
	fns := map[string]bool{}
	for _, f := range pkg.GetFunctions() {
		fns[f.GetKey()] = true
	}
	var used []string
	after := ""
	for {
		rows, err := r.ListDeployments(ctx, store.DeploymentFilter{PackageName: pkg.GetName(), After: after, Limit: pageSize})
		if err != nil {
			return nil, err
		}
		for _, row := range rows {
			cls, err := classOf(pkg, row.ClassKey)
			if err != nil {
				used = append(used, fmt.Sprintf("deployment %q uses class %q", row.Key, row.ClassKey))
				continue
			}
			var missing []string
			for _, b := range cls.GetFunctionBindings() {
				if k := b.GetFunctionKey(); !fns[k] && !slices.Contains(missing, k) {
					missing = append(missing, k)
				}
			}
			for _, f := range row.Spec.GetFunctions() {
				if k := f.GetFunctionKey(); !fns[k] && !slices.Contains(missing, k) {
					missing = append(missing, k)
				}
			}
			if len(missing) > 0 {
				used = append(used, fmt.Sprintf("deployment %q uses function %s", row.Key, quoteAll(missing)))
			}
		}
		if len(rows) < pageSize {
			return used, nil
		}
		after = rows[len(rows)-1].Key
	}
}

func quoteAll(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = fmt.Sprintf("%q", x)
	}
	return strings.Join(q, ", ")
}

// StagePackage records a package's embedded deployments that do not exist
// yet, in the transaction that writes the package, as not yet planned
// (PENDING). PackageWritten then deploys them; if PM dies first, the
// planner finds them and does. It runs CheckPackageWrite first, so a
// package that embeds a bad deployment is not written.
func (s *Service) StagePackage(ctx context.Context, tx store.Tx, pkg *pmv1.OPackage) error {
	if err := s.CheckPackageWrite(ctx, tx, pkg); err != nil {
		return err
	}
	for _, d := range pkg.GetDeployments() {
		d = embedded(pkg, d)
		if _, err := tx.GetDeployment(ctx, d.GetKey()); err == nil {
			continue
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		staged := Deployment{Key: d.GetKey(), Spec: d, Plan: Plan{Clusters: d.GetTargetEnvs()}, SpecRevision: 1}
		if _, err := tx.CreateDeployment(ctx, deploymentRow(&staged)); err != nil {
			return err
		}
		if err := tx.PutRevision(ctx, revisionRow(&staged, "created (embedded in package "+pkg.GetName()+")"), maxRevisions); err != nil {
			return err
		}
	}
	return nil
}

// embedded is a package's embedded deployment spec as it is stored.
func embedded(pkg *pmv1.OPackage, d *pmv1.OClassDeployment) *pmv1.OClassDeployment {
	d = proto.CloneOf(d)
	if d.PackageName == "" {
		d.PackageName = pkg.GetName()
	}
	catalog.ClearServerFields(d)
	return d
}

// PackageWritten deploys a package's staged embedded deployments (see
// StagePackage) in the background: the package write is acknowledged
// already, and every failure is recorded on its deployment.
func (s *Service) PackageWritten(ctx context.Context, pkg *pmv1.OPackage) {
	cid := correlation.From(ctx)
	for _, d := range pkg.GetDeployments() {
		key := d.GetKey()
		s.goWork(func() {
			ctx := correlation.With(context.WithoutCancel(ctx), cid)
			row, err := s.st.GetDeployment(ctx, key)
			if err != nil || row.Replicas != 0 || row.LastError != "" {
				return // deleted meanwhile, or planned before (it existed)
			}
			s.deployRecorded(ctx, row, KindDeploy)
		})
	}
}

// deployRecorded plans and deploys a deployment that is stored but runs
// nowhere: a staged embedded deployment, or one that failed everywhere
// before. It is a no-op when another operation works on it or it changed
// meanwhile; a planning failure is recorded on it. It reports whether the
// deployment now runs.
func (s *Service) deployRecorded(ctx context.Context, row store.DeploymentRow, kind Kind) bool {
	p, err := s.prepare(ctx, row.Spec, prepareOpts{})
	if err != nil {
		s.log.WarnContext(ctx, "auto-deploy cannot plan yet; the planner retries", "deployment", row.Key, "error", err)
		if row.LastError != err.Error() {
			// Only over what we planned from: another PM may be deploying it.
			row.LastError = err.Error()
			_, _ = s.st.UpdateDeployment(ctx, row, row.Revision)
		}
		return false
	}
	op := s.deployOperation(kind, row.Key, false, p)
	err = s.st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
		cur, err := tx.GetDeployment(ctx, row.Key)
		if err != nil {
			return err
		}
		if cur.Revision != row.Revision {
			return fault.New(fault.Conflict, "deployment %q changed meanwhile", row.Key)
		}
		d, err := deploymentOf(cur, nil)
		if err != nil {
			return err
		}
		d.Plan, d.PackageDigest = planOf(p), p.digest
		d.Rollouts = plannedRollouts(p)
		if _, err := tx.UpdateDeployment(ctx, deploymentRow(&d), cur.Revision); err != nil {
			return err
		}
		if err := tx.PutRollouts(ctx, rolloutRows(&d)...); err != nil {
			return err
		}
		return startOperation(ctx, tx, &op)
	})
	if err != nil {
		return false
	}
	s.log.InfoContext(ctx, "deploying a recorded deployment", "deployment", row.Key, "operation", op.ID,
		"clusters", p.targets, "replicas", p.plan.Replicas)
	out, err := s.exec.run(ctx, op, p.units)
	return err == nil && out.Failure == nil
}

// BeforePackageDelete cascades a package delete to its deployments when the
// policy (PACKAGE_DELETE_CASCADE) or the request (cascade) says so, and
// otherwise refuses while deployments exist.
func (s *Service) BeforePackageDelete(ctx context.Context, name string, cascade bool) error {
	var keys []string
	after := ""
	for {
		rows, err := s.st.ListDeployments(ctx, store.DeploymentFilter{PackageName: name, After: after, Limit: pageSize, SkipSpec: true})
		if err != nil {
			return err
		}
		for _, r := range rows {
			keys = append(keys, r.Key)
		}
		if len(rows) < pageSize {
			break
		}
		after = rows[len(rows)-1].Key
	}
	if len(keys) == 0 {
		return nil
	}
	if !s.cfg.Cascade && !cascade {
		return fault.New(fault.Conflict, "package %q has deployments (%s); delete them first, or delete the package with cascade (?cascade=true)",
			name, strings.Join(keys, ", "))
	}
	var busy []string
	for _, k := range keys {
		_, err := s.Delete(ctx, k, "", store.AnyRevision)
		switch {
		case err == nil, fault.KindOf(err) == fault.NotFound:
		case fault.KindOf(err) == fault.Conflict:
			// An operation is at work on it (an auto-deploy just started):
			// deleting the package now would leave that deployment running
			// without it.
			busy = append(busy, k)
		default:
			// Recorded as an active delete that PM keeps retrying.
			s.log.WarnContext(ctx, "cascade delete of a deployment failed; continuing", "package", name, "deployment", k, "error", err)
		}
	}
	if len(busy) > 0 {
		return fault.New(fault.Conflict, "package %q: deployments %s have operations in progress; retry the delete when they finish",
			name, strings.Join(busy, ", "))
	}
	return nil
}
