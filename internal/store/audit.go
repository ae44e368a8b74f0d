package store

import (
	"context"
	"time"
)

// AuditOutcome is how an audited call ended.
type AuditOutcome string

// Audit outcomes.
const (
	// AuditOK: the call succeeded.
	AuditOK AuditOutcome = "ok"
	// AuditDenied: the call was refused before it ran (unauthenticated,
	// permission denied, or the authentication failure limiter).
	AuditDenied AuditOutcome = "denied"
	// AuditError: the call ran and failed.
	AuditError AuditOutcome = "error"
)

// AuditRecord is one audited call. Every field but ID and Time is the
// caller's to fill; empty strings are stored as they are.
type AuditRecord struct {
	// ID is assigned by the store on append: positive, unique within the
	// store, and larger for later appends of one writer.
	ID int64
	// Time is stamped by the store from its clock on append (UTC,
	// microseconds), whatever the caller set.
	Time time.Time
	// Principal, Role and AuthMethod describe the caller (empty when it was
	// not authenticated).
	Principal  string
	Role       string
	AuthMethod string
	// Action is the RPC ("oaas.pm.v1.PackageService/DeletePackage").
	Action string
	// Target is the object's name or key.
	Target  string
	Outcome AuditOutcome
	// Code is the status as a connect code name ("ok", "permission_denied").
	Code string
	// Message is the error the caller received, "" on success.
	Message        string
	CorrelationID  string
	Source         string
	IdempotencyKey string
}

// AuditCursor is the position of a record in the newest-first order of
// ListAudit: records are ordered by Time, then ID, both descending.
type AuditCursor struct {
	Time time.Time
	ID   int64
}

// Cursor returns the position of r, to resume a listing after it.
func (r AuditRecord) Cursor() AuditCursor { return AuditCursor{Time: r.Time, ID: r.ID} }

// AuditFilter selects audit records for ListAudit. The zero value selects
// all. Non-empty string fields must match exactly.
type AuditFilter struct {
	Principal string
	Action    string
	Target    string
	Outcome   AuditOutcome
	// Since, when set, selects records at or after it; Until, when set,
	// records strictly before it.
	Since, Until time.Time
	// Before, when set (ID > 0), selects records that come after it in
	// newest-first order, that is, older ones (keyset paging: pass the
	// Cursor of the last record of the previous page).
	Before AuditCursor
	// Limit caps the result; 0 means no cap.
	Limit int
}

// Audit stores the audit trail. Records are appended, listed and purged;
// never changed.
type Audit interface {
	// AppendAudit stores rec with a new ID and the store's time, and
	// returns it as stored.
	AppendAudit(ctx context.Context, rec AuditRecord) (AuditRecord, error)
	// ListAudit returns the matching records newest first (Time, then ID,
	// descending).
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditRecord, error)
	// PurgeAudit deletes records older than before and returns how many it
	// deleted.
	PurgeAudit(ctx context.Context, before time.Time) (int, error)
}
