package deploy

// Condition refresh, a stage of the Observer: a deployed unit's condition
// is what its cluster's listing says (Available: running; Degraded or
// missing: down; otherwise deploying). Each cluster's changes are written
// in one statement, to rollouts only: a deployment's revision does not move
// when its clusters' conditions do. Every CRM call of it is a listing,
// bounded by CRM_DEFAULT_TIMEOUT like any other.

// ConditionsResult is what condition refresh changed in one pass.
type ConditionsResult struct {
	// Changed counts the units whose condition changed.
	Changed int
}

// conditionOf returns a deployed unit's new condition, or nil when it did
// not change (or the unit is not deployed: other rollouts keep theirs).
func (o *Observer) conditionOf(sn *snapshot, r Rollout) *Condition {
	if r.State != RolloutDeployed {
		return nil
	}
	c := sn.condition(r.UnitID)
	if c == r.Condition {
		return nil
	}
	return &c
}
