package api

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/internal/catalog"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// Audit serves oaas.pm.v1.AuditService: the audit trail, newest first.
type Audit struct {
	st store.Audit
}

var _ pmv1connect.AuditServiceHandler = (*Audit)(nil)

// NewAudit returns the audit handler over st.
func NewAudit(st store.Audit) *Audit { return &Audit{st: st} }

// ListAuditRecords implements AuditService.
func (h *Audit) ListAuditRecords(ctx context.Context, req *pmv1.ListAuditRecordsRequest) (*pmv1.ListAuditRecordsResponse, error) {
	f, limit, err := auditFilter(req)
	if err != nil {
		return nil, err
	}
	f.Limit = limit + 1 // one more tells whether another page exists
	recs, err := h.st.ListAudit(ctx, f)
	if err != nil {
		return nil, err
	}
	next := ""
	if len(recs) > limit {
		recs = recs[:limit]
		next = encodeAuditToken(recs[len(recs)-1].Cursor())
	}
	setNextPage(ctx, next)
	items := make([]*pmv1.AuditRecord, len(recs))
	for i, r := range recs {
		items[i] = auditRecordOf(r)
	}
	return &pmv1.ListAuditRecordsResponse{Items: items, NextPageToken: next}, nil
}

// auditFilter validates a request into a store filter and a page size.
func auditFilter(req *pmv1.ListAuditRecordsRequest) (store.AuditFilter, int, error) {
	f := store.AuditFilter{
		Principal: req.GetPrincipal(),
		Action:    strings.TrimPrefix(req.GetAction(), "/"),
		Target:    req.GetTarget(),
	}
	switch o := store.AuditOutcome(req.GetOutcome()); o {
	case "", store.AuditOK, store.AuditDenied, store.AuditError:
		f.Outcome = o
	default:
		return f, 0, fault.Invalidf("outcome: %q is not ok, denied or error", req.GetOutcome())
	}
	var err error
	if f.Since, err = parseAuditTime("since", req.GetSince()); err != nil {
		return f, 0, err
	}
	if f.Until, err = parseAuditTime("until", req.GetUntil()); err != nil {
		return f, 0, err
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && f.Until.Before(f.Since) {
		return f, 0, fault.Invalidf("until: %s is before since (%s)", req.GetUntil(), req.GetSince())
	}
	limit, err := catalog.PageLimit(int(req.GetLimit()))
	if err != nil {
		return f, 0, err
	}
	if tok := req.GetPageToken(); tok != "" {
		if f.Before, err = decodeAuditToken(tok); err != nil {
			return f, 0, err
		}
	}
	return f, limit, nil
}

func parseAuditTime(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fault.Invalidf("%s: %q is not an RFC 3339 time such as 2025-01-31T12:00:00Z", field, s)
	}
	return t.UTC(), nil
}

// Audit page tokens are opaque to clients: the position of the last record
// of the page, its time in microseconds and its id.
const auditTokenPrefix = "a:"

func encodeAuditToken(c store.AuditCursor) string {
	raw := fmt.Sprintf("%s%d:%d", auditTokenPrefix, c.Time.UnixMicro(), c.ID)
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

func decodeAuditToken(tok string) (store.AuditCursor, error) {
	bad := fault.Invalidf("page_token: %q is not a token returned by a previous list call", tok)
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return store.AuditCursor{}, bad
	}
	rest, ok := strings.CutPrefix(string(raw), auditTokenPrefix)
	if !ok {
		return store.AuditCursor{}, bad
	}
	us, id, ok := strings.Cut(rest, ":")
	if !ok {
		return store.AuditCursor{}, bad
	}
	micros, err1 := strconv.ParseInt(us, 10, 64)
	n, err2 := strconv.ParseInt(id, 10, 64)
	if err1 != nil || err2 != nil || n <= 0 {
		return store.AuditCursor{}, bad
	}
	return store.AuditCursor{Time: time.UnixMicro(micros).UTC(), ID: n}, nil
}

func auditRecordOf(r store.AuditRecord) *pmv1.AuditRecord {
	return &pmv1.AuditRecord{
		Id:             strconv.FormatInt(r.ID, 10),
		Time:           timestamppb.New(r.Time),
		Principal:      r.Principal,
		Role:           r.Role,
		AuthMethod:     r.AuthMethod,
		Action:         r.Action,
		Target:         r.Target,
		Outcome:        string(r.Outcome),
		StatusCode:     r.Code,
		Message:        r.Message,
		CorrelationId:  r.CorrelationID,
		Source:         r.Source,
		IdempotencyKey: r.IdempotencyKey,
	}
}
