package main

import (
	"context"
	"fmt"
	"time"

	"github.com/oaas/pm/bench/internal/scratchdb"
	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	"github.com/oaas/pm/internal/deploy"
)

// selfCheck plants the two failures the harness must catch, so that a run
// with -self-check proves the checks can fail: a runtime with PM's id
// scheme put straight on a cluster (an orphan), and an acknowledged
// deployment deleted straight from the database behind PM's back (a lost
// write, whose runtimes then are orphans too), and the spec of an updated
// deployment changed in the database (a lost update).
func selfCheck(ctx context.Context, v *verifier, db *scratchdb.DB) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c := v.clusters[0]
	unit := &deploymentpb.DeploymentUnit{
		Id: deploy.UnitID("ghost", c.name), PackageName: packageName, ClassKey: classKey, TargetEnv: c.name,
	}
	if _, err := v.crms[0].Deploy(ctx, &deploymentpb.DeployRequest{DeploymentUnit: unit}); err != nil {
		return fmt.Errorf("self-check: planting an orphan on %s: %w", c.name, err)
	}
	logf("self-check: planted runtime %s on %s", unit.GetId(), c.name)
	deleted := ""
	for _, e := range v.ledger {
		if e.expect() != mustExist || e.updated {
			continue
		}
		if err := db.Exec(ctx, "DELETE FROM deployments WHERE key = $1", e.key); err != nil {
			return fmt.Errorf("self-check: deleting %s behind PM's back: %w", e.key, err)
		}
		logf("self-check: deleted acknowledged deployment %s from the database", e.key)
		deleted = e.key
		break
	}
	for _, e := range v.ledger {
		if e.expect() != mustExist || !e.updated || e.key == deleted {
			continue
		}
		if err := db.Exec(ctx, `UPDATE deployments SET spec = jsonb_set(spec, '{functions,0,config,MODE}', '"tampered"') WHERE key = $1`, e.key); err != nil {
			return fmt.Errorf("self-check: undoing the update of %s behind PM's back: %w", e.key, err)
		}
		logf("self-check: changed the spec of updated deployment %s in the database", e.key)
		break
	}
	return nil
}
