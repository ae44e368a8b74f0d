package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
)

// rolloutFlags are the flags of commands that can wait for a rollout.
type rolloutFlags struct {
	wait     bool
	timeout  time.Duration
	interval time.Duration
}

func (f *rolloutFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.wait, "wait", false, "wait until every cluster of the deployment(s) is RUNNING or one fails, printing each change")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 5*time.Minute, "with --wait: how long to wait")
	cmd.Flags().DurationVar(&f.interval, "interval", time.Second, "with --wait: how often to ask PM")
}

func (a *app) applyCommand() *cobra.Command {
	var (
		files     []string
		recursive bool
		dryRun    bool
		rf        rolloutFlags
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|- [-f ...] [FILE...]",
		Short: "Create or update packages and deployments from JSON or YAML files",
		Long: `Create or update packages and deployments from JSON or YAML files.

A file holds one JSON document, a JSON array, or YAML documents separated by
"---". A document is a package if it has classes, functions or version, a
deployment if it has package_name and class_key; "kind: Package" or
"kind: Deployment" says so explicitly (and is not sent to PM). Packages are
applied before deployments. Arguments after the flags are files too, so a
shell glob works: pmctl apply -f manifests/*.json.

A package that does not exist is created; one that differs from the stored
one is updated with the revision that was read (a concurrent change fails
with exit code 4 instead of being overwritten). A deployment that does not
exist is created; an existing one is updated the same way (PM rolls the
change out one cluster at a time and reverts it if a cluster fails), or
left alone when PM says the document is what it runs.

Unknown fields are rejected by default (Field-Validation: Strict);
--validate=warn accepts them and prints PM's warnings on stderr.`,
		Example: `  pmctl apply -f echo.yaml
  pmctl apply -f ./manifests/ --dry-run
  cat pkg.json | pmctl apply -f - --wait`,
		Args: cobra.ArbitraryArgs,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			files = append(files, args...)
			if len(files) == 0 {
				return usageErr("apply needs -f FILE, DIR or - (stdin)")
			}
			docs, err := loadDocuments(files, a.streams.In, recursive)
			if err != nil {
				return err
			}
			c, err := a.connect(cmd)
			if err != nil {
				return err
			}
			ap := &applier{app: a, c: c, dryRun: dryRun, strict: strings.EqualFold(a.validate, "strict")}
			waits, err := ap.applyAll(cmd.Context(), docs)
			if err != nil || !rf.wait || dryRun || len(waits) == 0 {
				return err
			}
			return a.waitRollouts(cmd.Context(), c, waits, rf)
		}),
	}
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "file, directory or - (stdin); repeatable")
	cmd.Flags().BoolVarP(&recursive, "recursive", "R", false, "read directories recursively")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show the plan and a diff against what PM stores; change nothing")
	cmd.Flags().StringVar(&a.validate, "validate", "strict", "unknown fields: strict (reject), warn (accept, print warnings) or ignore")
	_ = cmd.MarkFlagFilename("filename", "yaml", "yml", "json")
	_ = cmd.RegisterFlagCompletionFunc("validate", cobra.FixedCompletions([]string{"strict", "warn", "ignore"}, cobra.ShellCompDirectiveNoFileComp))
	rf.add(cmd)
	return cmd
}

// applier applies documents one by one.
type applier struct {
	app    *app
	c      *conn
	dryRun bool
	// strict: unknown fields are errors (checked locally only where PM
	// does not see the document: a package's dry run).
	strict bool
}

// result is what applying one document did.
type result struct {
	// action is "created", "updated", "unchanged", "exists", or with
	// --dry-run "would be created", ...
	action string
	// detail is printed after the action, e.g. the deployment plan.
	detail string
	// diff, with --dry-run, shows what would change.
	diff string
	// waits are the deployments whose rollout --wait follows.
	waits []string
}

// applyAll applies packages, then deployments, each in file order. It
// carries on past a failed document and returns an error counting them,
// with the exit code of the first; each failure is printed as it happens.
func (ap *applier) applyAll(ctx context.Context, docs []*document) ([]string, error) {
	ordered := make([]*document, 0, len(docs))
	for _, k := range []kind{kindPackage, kindDeployment} {
		for _, d := range docs {
			if d.kind == k {
				ordered = append(ordered, d)
			}
		}
	}
	var (
		waits    []string
		firstErr error
		failed   int
	)
	out := ap.app.streams.Out
	for _, d := range ordered {
		if err := ctx.Err(); err != nil {
			return nil, failf(ExitError, "interrupted")
		}
		var (
			res result
			err error
		)
		switch d.kind {
		case kindPackage:
			res, err = ap.applyPackage(ctx, d)
		default:
			res, err = ap.applyDeployment(ctx, d)
		}
		if err != nil {
			failed++
			err = &exitError{code: ExitCode(err), msg: fmt.Sprintf("%s (%s): %s", d.ref(), d.source, err.Error()), err: err}
			if len(ordered) == 1 {
				return nil, err
			}
			if firstErr == nil {
				firstErr = err
			}
			Report(ap.app.streams.Err, err)
			continue
		}
		line := d.ref() + " " + res.action
		if res.detail != "" {
			line += ": " + res.detail
		}
		_, _ = fmt.Fprintln(out, line)
		_, _ = io.WriteString(out, res.diff)
		waits = append(waits, res.waits...)
	}
	if firstErr != nil {
		return nil, &exitError{code: ExitCode(firstErr), msg: fmt.Sprintf("%d of %d document(s) failed", failed, len(ordered)), err: firstErr}
	}
	return waits, nil
}

func isCode(err error, code connect.Code) bool {
	var ce *connect.Error
	return errors.As(err, &ce) && ce.Code() == code
}

// plainError keeps only the message and exit code of an apiError, for
// lines that already name the document.
func (ap *applier) plainError(err error) error {
	return ap.c.apiError("", err)
}

func (ap *applier) applyPackage(ctx context.Context, d *document) (result, error) {
	if d.name == "" {
		return result{}, failf(ExitError, "the package has no name")
	}
	got, err := ap.c.packages.GetPackage(ctx, &pmv1.GetPackageRequest{Name: d.name})
	exists := err == nil
	if err != nil && !isCode(err, connect.CodeNotFound) {
		return result{}, ap.plainError(err)
	}
	local, _ := d.msg.(*pmv1.OPackage)
	var stored *pmv1.OPackage
	var rev string
	if exists {
		stored, rev = got.GetPackage(), got.GetRevision()
		if local != nil && proto.Equal(comparablePackage(local), comparablePackage(stored)) {
			// PM does not see the document: apply its field policy here.
			if err := ap.checkLocally(d); err != nil {
				return result{}, err
			}
			if ap.dryRun {
				return result{action: "unchanged (dry run)"}, nil
			}
			return result{action: "unchanged"}, nil
		}
	}
	if ap.dryRun {
		if err := ap.checkLocally(d); err != nil {
			return result{}, err
		}
		if local == nil {
			return result{}, failf(ExitError, "%v", d.parseErr)
		}
		action := "would be created (dry run)"
		var from proto.Message
		fromName := ""
		if exists {
			action = "would be updated (dry run)"
			from = comparablePackage(stored)
			fromName = fmt.Sprintf("%s (stored, revision %s)", d.ref(), rev)
		}
		diff, err := diffText(from, comparablePackage(local), fromName, fmt.Sprintf("%s (%s)", d.ref(), d.source))
		return result{action: action, diff: diff}, err
	}
	var pkg *pmv1.OPackage
	var action string
	if !exists {
		req := &pmv1.CreatePackageRequest{}
		done, err := ap.c.withDocument(req, "package", d.body)
		if err != nil {
			return result{}, err
		}
		res, err := ap.c.packages.CreatePackage(ctx, req)
		done()
		if err != nil {
			return result{}, ap.plainError(err)
		}
		pkg, action = res.GetPackage(), "created"
	} else {
		req := &pmv1.UpdatePackageRequest{Name: d.name, ExpectedRevision: rev}
		done, err := ap.c.withDocument(req, "package", d.body)
		if err != nil {
			return result{}, err
		}
		res, err := ap.c.packages.UpdatePackage(ctx, req)
		done()
		if err != nil {
			return result{}, ap.plainError(err)
		}
		pkg, action = res.GetPackage(), "updated"
	}
	r := result{action: action}
	for _, dep := range pkg.GetDeployments() {
		r.waits = append(r.waits, dep.GetKey())
	}
	return r, nil
}

// checkLocally applies the field policy where PM does not see the
// document (a dry run): unknown fields fail under strict validation and
// are warned about otherwise.
func (ap *applier) checkLocally(d *document) error {
	if len(d.unknown) == 0 || strings.EqualFold(ap.app.validate, "ignore") {
		return nil
	}
	quoted := make([]string, len(d.unknown))
	for i, u := range d.unknown {
		quoted[i] = fmt.Sprintf("unknown field %q", u)
	}
	if ap.strict {
		return failf(ExitError, "%s (strict field validation)", strings.Join(quoted, "; "))
	}
	for _, q := range quoted {
		_, _ = fmt.Fprintf(ap.app.streams.Err, "warning: %s: %s\n", d.ref(), q)
	}
	return nil
}

func (ap *applier) applyDeployment(ctx context.Context, d *document) (result, error) {
	if d.name == "" {
		return result{}, failf(ExitError, "the deployment has no key")
	}
	got, err := ap.c.deployments.GetDeployment(ctx, &pmv1.GetDeploymentRequest{Key: d.name})
	if err == nil {
		return ap.existingDeployment(ctx, d, got.GetDeployment(), got.GetRevision())
	}
	if !isCode(err, connect.CodeNotFound) {
		return result{}, ap.plainError(err)
	}
	req := &pmv1.CreateDeploymentRequest{DryRun: ap.dryRun}
	done, err := ap.c.withDocument(req, "deployment", d.body)
	if err != nil {
		return result{}, err
	}
	res, err := ap.c.deployments.CreateDeployment(ctx, req)
	done()
	if err != nil {
		return result{}, ap.plainError(err)
	}
	if ap.dryRun {
		diff, err := diffText(nil, comparableDeployment(res.GetDeployment(), nil), "", fmt.Sprintf("%s (%s)", d.ref(), d.source))
		return result{action: "would be created (dry run)", detail: planText(res.GetDeployment()), diff: diff}, err
	}
	return result{action: "created", detail: planText(res.GetDeployment()), waits: []string{d.name}}, nil
}

// existingDeployment handles a deployment document whose key PM has.
func (ap *applier) existingDeployment(ctx context.Context, d *document, stored *pmv1.OClassDeployment, rev string) (result, error) {
	local, _ := d.msg.(*pmv1.OClassDeployment)
	// PM does not see the document: apply its field policy here.
	if err := ap.checkLocally(d); err != nil {
		return result{}, err
	}
	if local != nil && proto.Equal(comparableDeployment(local, stored), comparableDeployment(stored, nil)) {
		if ap.dryRun {
			return result{action: "unchanged (dry run)"}, nil
		}
		return result{action: "unchanged"}, nil
	}
	return ap.updateDeployment(ctx, d, stored, rev)
}

// updateDeployment changes an existing deployment to match d through
// UpdateDeployment, conditional on the revision that was read (a
// concurrent change fails with exit code 4 instead of being overwritten).
// PM decides whether anything changed: the spec as PM answers it carries
// what PM fills in (derived functions, ODGM defaults), which a document
// never spells out. A dry run's diff compares PM's answers before and
// after, so that only what the document changes shows.
func (ap *applier) updateDeployment(ctx context.Context, d *document, stored *pmv1.OClassDeployment, rev string) (result, error) {
	req := &pmv1.UpdateDeploymentRequest{Key: d.name, ExpectedRevision: rev, DryRun: ap.dryRun}
	done, err := ap.c.withDocument(req, "deployment", d.body)
	if err != nil {
		return result{}, err
	}
	res, err := ap.c.deployments.UpdateDeployment(ctx, req)
	done()
	if err != nil {
		return result{}, ap.plainError(err)
	}
	switch {
	case res.GetResult().GetStatus() == "unchanged" && ap.dryRun:
		return result{action: "unchanged (dry run)"}, nil
	case res.GetResult().GetStatus() == "unchanged":
		return result{action: "unchanged"}, nil
	case ap.dryRun:
		diff, err := diffText(comparableDeployment(stored, nil), comparableDeployment(res.GetDeployment(), nil),
			fmt.Sprintf("%s (stored, revision %s)", d.ref(), rev), fmt.Sprintf("%s (%s)", d.ref(), d.source))
		return result{action: "would be updated (dry run)", detail: planText(res.GetDeployment()), diff: diff}, err
	}
	return result{action: "updated", detail: planText(res.GetDeployment()), waits: []string{d.name}}, nil
}

// planText summarises a deployment's plan on one line.
func planText(d *pmv1.OClassDeployment) string {
	st := d.GetStatus()
	if st == nil {
		return ""
	}
	return fmt.Sprintf("%d replica(s) on %s, availability %s (target %s)", st.GetReplicationFactor(),
		strings.Join(st.GetSelectedEnvs(), ", "), ratio(st.GetAchievedQuorumAvailability()), ratio(st.GetTargetAvailability()))
}
