package deploy

import "fmt"

// This file is the operations' state machines: one table per kind, state ×
// event → action and next state. The executor (executor.go) runs an
// operation's steps, reads the event off them, looks the transition up here
// and applies it in one transaction; nothing else decides how an operation
// ends. A kind's missing row is a bug, reported as such.

// Event is what an operation's steps add up to once none is left to run,
// or what happens to a waiting operation.
type Event string

// Events.
const (
	// EvDone: every step succeeded.
	EvDone Event = "done"
	// EvPartial: some steps succeeded, some failed.
	EvPartial Event = "partial"
	// EvFailed: no step succeeded (or, in an all-or-nothing create, not
	// every one did).
	EvFailed Event = "failed"
	// EvExhausted: a removal step failed and has used every attempt it gets.
	EvExhausted Event = "exhausted"
	// EvRetryDue: a waiting operation's pause is over and a PM claimed it.
	EvRetryDue Event = "retry-due"
)

// Action is what a transition does, in the transaction that moves the
// operation to its next state.
type Action string

// Actions.
const (
	// ActSettle records the outcome on the deployment (its last error).
	ActSettle Action = "settle"
	// ActComplete settles and, when the operation says so (Drop), removes
	// the deployment.
	ActComplete Action = "complete"
	// ActRollBack starts a rollback of every step's unit (a deploy that
	// timed out may have been applied) in the same transaction.
	ActRollBack Action = "roll back"
	// ActHalt skips the steps not yet run and settles.
	ActHalt Action = "halt"
	// ActRetryLater puts the failed steps back to pending and pauses the
	// operation for a while.
	ActRetryLater Action = "retry later"
	// ActResume takes a waiting operation up again (claiming does it).
	ActResume Action = "resume"
	// ActPrune settles and starts a delete of the units on clusters the
	// deployment no longer targets (an update that moved it), in the same
	// transaction.
	ActPrune Action = "prune"
	// ActRevert halts (skips the steps not run, settles) and puts the
	// previous spec revision back as a new one, starting a revert
	// operation that re-sends it to the clusters the update reached, in
	// the same transaction. Without a previous revision it only halts.
	ActRevert Action = "revert"
)

// Transition is one row of a machine.
type Transition struct {
	Action Action
	Next   OpState
}

// machines holds every kind's table. Repairs (heal) never take down what
// runs; removals (delete, rollback) are never forgotten while a cluster is
// unreachable, only given up after maxCleanupAttempts.
var machines = map[Kind]map[OpState]map[Event]Transition{
	KindDeploy: {
		OpRunning: {
			EvDone:    {ActSettle, OpSucceeded},
			EvPartial: {ActSettle, OpSucceeded}, // the clusters that succeeded stay
			EvFailed:  {ActRollBack, OpFailed},
		},
	},
	KindUpdate: {
		OpRunning: {
			EvDone:    {ActPrune, OpSucceeded},
			EvPartial: {ActRevert, OpFailed},
			EvFailed:  {ActRevert, OpFailed}, // the failed cluster may have taken it
		},
	},
	KindRevert: {
		OpRunning: {
			EvDone:    {ActPrune, OpSucceeded},
			EvPartial: {ActHalt, OpFailed}, // a revert is not reverted
			EvFailed:  {ActHalt, OpFailed},
		},
	},
	KindHeal: {
		OpRunning: {
			EvDone:    {ActSettle, OpSucceeded},
			EvPartial: {ActSettle, OpFailed},
			EvFailed:  {ActSettle, OpFailed},
		},
	},
	KindDelete: {
		OpRunning: {
			EvDone:      {ActComplete, OpSucceeded},
			EvPartial:   {ActRetryLater, OpWaiting},
			EvFailed:    {ActRetryLater, OpWaiting},
			EvExhausted: {ActComplete, OpFailed},
		},
		OpWaiting: {
			EvRetryDue: {ActResume, OpRunning},
		},
	},
	KindRollback: {
		OpRunning: {
			EvDone:      {ActComplete, OpSucceeded},
			EvPartial:   {ActRetryLater, OpWaiting},
			EvFailed:    {ActRetryLater, OpWaiting},
			EvExhausted: {ActComplete, OpFailed},
		},
		OpWaiting: {
			EvRetryDue: {ActResume, OpRunning},
		},
	},
}

// Next looks up the transition of an operation of kind k in state s on
// event e.
func Next(k Kind, s OpState, e Event) (Transition, error) {
	t, ok := machines[k][s][e]
	if !ok {
		return Transition{}, fmt.Errorf("no transition for a %s operation in state %s on event %s", k, s, e)
	}
	return t, nil
}

// maxCleanupAttempts caps the CRM calls of one removal step across
// retries; past it the operation gives up and what is left is reported as
// an orphan.
const maxCleanupAttempts = 30

// eventOf reads the event off an operation none of whose runnable steps is
// pending. allOrNothing makes a partial deploy count as failed (the
// DEPLOY_ROLLBACK_ON_PARTIAL policy).
func eventOf(op *Operation, allOrNothing bool) Event {
	ok, failed, exhausted := 0, 0, false
	for _, s := range op.Steps {
		switch s.State {
		case StepSucceeded:
			ok++
		case StepFailed:
			failed++
			exhausted = exhausted || s.Attempts >= maxCleanupAttempts
		}
	}
	switch {
	case failed == 0:
		return EvDone
	case !op.Kind.sendsUnits() && exhausted:
		return EvExhausted
	case ok == 0, op.Kind == KindDeploy && allOrNothing:
		return EvFailed
	default:
		return EvPartial
	}
}
