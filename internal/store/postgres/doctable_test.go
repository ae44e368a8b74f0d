package postgres

import (
	"fmt"
	"testing"

	"github.com/oaas/pm/internal/store"
)

// TestDocTableSQL pins the statements newDocTable writes to the texts the
// stores ran when each table spelled its SQL out by hand, so that folding
// them into templates changed no query (and no index the planner picks).
func TestDocTableSQL(t *testing.T) {
	t.Parallel()
	const pkgUpdate = `
UPDATE packages SET
    version = $2, disabled = $3, tags = $4, author = $5,
    revision = revision + 1, updated_at = $6,
    doc = jsonb_set($7::jsonb, '{metadata,created_at}',
        to_jsonb(to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))
WHERE name = $1`
	for _, tc := range []struct {
		what      string
		got, want docSQL
	}{
		{"packages", packages.sql, docSQL{
			insert: `
INSERT INTO packages (name, version, disabled, tags, author, revision, created_at, updated_at, doc)
VALUES ($1, $2, $3, $4, $5, 1, $6, $6, $7)`,
			get:            `SELECT revision, doc FROM packages WHERE name = $1`,
			revision:       `SELECT revision FROM packages WHERE name = $1`,
			updateAny:      pkgUpdate + ` RETURNING revision, created_at`,
			updateExpected: pkgUpdate + ` AND revision = $8 RETURNING revision, created_at`,
			deleteAny:      `DELETE FROM packages WHERE name = $1 RETURNING revision`,
			deleteExpected: `DELETE FROM packages WHERE name = $1 AND revision = $2 RETURNING revision`,
			selectList:     `SELECT name, revision, doc FROM packages`,
			listOrder:      ` ORDER BY name`,
			listAfter:      `name >`,
			listOf:         `list packages`,
		}},
	} {
		if tc.got != tc.want {
			t.Errorf("%s:\n got %#v\nwant %#v", tc.what, tc.got, tc.want)
		}
	}
}

// TestListQueries pins whole list statements and their arguments, as the
// hand-written builders produced them: parameters are numbered in the
// order filters add them, After last, then LIMIT and OFFSET.
func TestListQueries(t *testing.T) {
	t.Parallel()
	off := false
	build := func(sql string, args []any) [2]string { return [2]string{sql, fmt.Sprint(args)} }
	for _, tc := range []struct {
		got, want [2]string
	}{
		{
			build(packageListQuery(store.PackageFilter{})),
			[2]string{`SELECT name, revision, doc FROM packages ORDER BY name`, `[]`},
		},
		{
			build(packageListQuery(store.PackageFilter{
				NamePattern: "a*b", Disabled: &off, After: "m", Limit: 5, Offset: 2,
			})),
			[2]string{
				`SELECT name, revision, doc FROM packages WHERE name LIKE $1 AND disabled = $2 AND name > $3 ORDER BY name LIMIT $4 OFFSET $5`,
				`[%a%b% false m 5 2]`,
			},
		},
		{
			build(packageListQuery(store.PackageFilter{
				NamePattern: "a*b", Disabled: &off, Tags: []string{"t", "t"}, After: "m", Limit: 5, Offset: 2,
			})),
			[2]string{
				`SELECT p.name, p.revision, p.doc FROM package_tags t JOIN packages p ON p.name = t.name ` +
					`WHERE t.tag = $1 AND t.name > $2 AND p.name > $2 AND p.name LIKE $3 AND p.disabled = $4 ORDER BY t.name LIMIT $5 OFFSET $6`,
				`[t m %a%b% false 5 2]`,
			},
		},
		{
			build(packageListQuery(store.PackageFilter{Tags: []string{"t", "u"}})),
			[2]string{
				`SELECT p.name, p.revision, p.doc FROM (SELECT DISTINCT name FROM (` +
					`(SELECT t.name FROM package_tags t WHERE t.tag = $1 ORDER BY t.name) UNION ALL ` +
					`(SELECT t.name FROM package_tags t WHERE t.tag = $2 ORDER BY t.name)` +
					`) u ORDER BY name) m JOIN packages p ON p.name = m.name ORDER BY p.name`,
				`[t u]`,
			},
		},
		{
			build(packageListQuery(store.PackageFilter{
				Disabled: &off, Tags: []string{"t", "u"}, After: "m", Limit: 5, Offset: 2,
			})),
			[2]string{
				`SELECT p.name, p.revision, p.doc FROM (SELECT DISTINCT name FROM (` +
					`(SELECT t.name FROM package_tags t JOIN packages p ON p.name = t.name WHERE t.tag = $4 AND t.name > $1 AND p.name > $1 AND p.disabled = $2 ORDER BY t.name LIMIT $3) UNION ALL ` +
					`(SELECT t.name FROM package_tags t JOIN packages p ON p.name = t.name WHERE t.tag = $5 AND t.name > $1 AND p.name > $1 AND p.disabled = $2 ORDER BY t.name LIMIT $3)` +
					`) u ORDER BY name LIMIT $6 OFFSET $7) m JOIN packages p ON p.name = m.name ORDER BY p.name`,
				`[m false 7 t u 5 2]`,
			},
		},
	} {
		if tc.got != tc.want {
			t.Errorf("\n got %q\nwant %q", tc.got, tc.want)
		}
	}
}
