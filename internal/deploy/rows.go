package deploy

import (
	"fmt"

	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// This file converts the model to and from the store's rows. A value the
// model does not know (a row written by a newer PM, or damaged) is an
// error, never a guess.

func parseState[T ~string](what, v string, known ...T) (T, error) {
	for _, k := range known {
		if string(k) == v {
			return k, nil
		}
	}
	return "", fault.New(fault.Internal, "stored %s %q is not one this PM knows", what, v)
}

func deploymentRow(d *Deployment) store.DeploymentRow {
	return store.DeploymentRow{
		Key:                  d.Key,
		PackageName:          d.Spec.GetPackageName(),
		ClassKey:             d.Spec.GetClassKey(),
		Targets:              d.Plan.Clusters,
		Spec:                 d.Spec,
		Replicas:             d.Plan.Replicas,
		TargetAvailability:   d.Plan.Target,
		AchievedAvailability: d.Plan.Achieved,
		Algorithm:            d.Plan.Algorithm,
		Strong:               d.Plan.Strong,
		LastError:            d.LastError,
		SpecRevision:         d.SpecRevision,
		PackageDigest:        d.PackageDigest,
		Revision:             d.Revision,
	}
}

// deploymentOf joins a deployment row with its rollout rows.
func deploymentOf(row store.DeploymentRow, rollouts []store.RolloutRow) (Deployment, error) {
	d := Deployment{
		Key:  row.Key,
		Spec: row.Spec,
		Plan: Plan{
			Replicas: row.Replicas, Target: row.TargetAvailability, Achieved: row.AchievedAvailability,
			Algorithm: row.Algorithm, Strong: row.Strong, Clusters: row.Targets,
		},
		LastError:     row.LastError,
		Revision:      row.Revision,
		SpecRevision:  row.SpecRevision,
		PackageDigest: row.PackageDigest,
		CreatedAt:     row.CreatedAt,
		UpdatedAt:     row.UpdatedAt,
	}
	for _, r := range rollouts {
		ro, err := rolloutOf(r)
		if err != nil {
			return Deployment{}, fmt.Errorf("deployment %q: %w", row.Key, err)
		}
		d.Rollouts = append(d.Rollouts, ro)
	}
	return d, nil
}

func rolloutRow(key string, r Rollout) store.RolloutRow {
	return store.RolloutRow{
		DeploymentKey: key, Cluster: r.Cluster, UnitID: r.UnitID,
		State: string(r.State), Condition: string(r.Condition),
		Availability: r.Availability, AvailabilitySource: r.AvailabilitySource,
		Error: r.Error, Attempts: r.Attempts,
	}
}

func rolloutOf(r store.RolloutRow) (Rollout, error) {
	state, err := parseState("rollout state", r.State, RolloutPlanned, RolloutDeployed, RolloutFailed,
		RolloutRolledBack, RolloutDeleted, RolloutDeleteFailed)
	if err != nil {
		return Rollout{}, err
	}
	cond, err := parseState("condition", r.Condition, CondPending, CondDeploying, CondRunning, CondDown, CondDeleted)
	if err != nil {
		return Rollout{}, err
	}
	unit := r.UnitID
	if unit == "" {
		// Rows moved from the first schema may lack it; it is deterministic.
		unit = UnitID(r.DeploymentKey, r.Cluster)
	}
	return Rollout{
		Cluster: r.Cluster, UnitID: unit, State: state, Condition: cond,
		Availability: r.Availability, AvailabilitySource: r.AvailabilitySource,
		Error: r.Error, Attempts: r.Attempts,
	}, nil
}

func operationRow(op *Operation) store.OperationRow {
	steps := make([]store.StepRow, len(op.Steps))
	for i, s := range op.Steps {
		steps[i] = stepRow(s)
	}
	return store.OperationRow{
		ID: op.ID, Kind: string(op.Kind), DeploymentKey: op.DeploymentKey, Drop: op.Drop,
		State: string(op.State), Steps: steps, Owner: op.Owner, LeaseUntil: op.LeaseUntil,
		Error: op.Error, CreatedAt: op.CreatedAt, UpdatedAt: op.UpdatedAt,
	}
}

func stepRow(s Step) store.StepRow {
	return store.StepRow{Cluster: s.Cluster, UnitID: s.UnitID, State: string(s.State), Attempts: s.Attempts, Error: s.Error}
}

func operationOf(row store.OperationRow) (Operation, error) {
	kind, err := parseState("operation kind", row.Kind, kinds...)
	if err != nil {
		return Operation{}, err
	}
	state, err := parseState("operation state", row.State, OpRunning, OpWaiting, OpSucceeded, OpFailed)
	if err != nil {
		return Operation{}, err
	}
	op := Operation{
		ID: row.ID, Kind: kind, DeploymentKey: row.DeploymentKey, Drop: row.Drop, State: state,
		Owner: row.Owner, LeaseUntil: row.LeaseUntil, Error: row.Error,
		CreatedAt: row.CreatedAt, UpdatedAt: row.UpdatedAt,
	}
	for _, s := range row.Steps {
		st, err := parseState("step state", s.State, StepPending, StepSucceeded, StepFailed, StepSkipped)
		if err != nil {
			return Operation{}, err
		}
		op.Steps = append(op.Steps, Step{Cluster: s.Cluster, UnitID: s.UnitID, State: st, Attempts: s.Attempts, Error: s.Error})
	}
	return op, nil
}
