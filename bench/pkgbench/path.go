package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/oaas/pm/bench/internal/scratchdb"
)

// floorTarget is the share of the floor's throughput PM should reach on
// create and get (issue 9; reported, not asserted).
const floorTarget = 0.80

// pathTag is the tag every package of the path mode carries, which its
// list phase filters on: the list reads the first 20 of all packages.
const pathTag = "demo"

// pathResult is one line of the path report.
type pathResult struct {
	op      operation
	clients int
	pm      stats
	floor   *stats
	pgb     *pgbenchResult
	rows    int // list phases: packages in each table
}

// runPath runs the path mode: PM, the floor and pgbench on one scratch
// database.
func runPath(ctx context.Context, o options, out *printer) (err error) {
	var pgb *pgbench
	if o.pgbench {
		path, version, err := findPgbench(ctx, o.pgbenchPath)
		if err != nil {
			return err
		}
		pgb = &pgbench{path: path, version: version}
	}
	db, err := newScratch(ctx, o.databaseURL)
	if err != nil {
		return err
	}
	defer func() {
		if o.keep {
			out.printf("\nkept scratch database %s (%s)\n", db.Name, scratchdb.Redact(db.URL))
			return
		}
		err = errors.Join(err, db.Close())
	}()

	pm, err := startPM(ctx, "postgres", db.URL)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, pm.stop()) }()
	var fl *floor
	if o.floor {
		if fl, err = startFloor(ctx, db.URL, pm.poolSize()); err != nil {
			return fmt.Errorf("starting the floor: %w", err)
		}
		defer func() { err = errors.Join(err, fl.stop()) }()
	}
	if pgb != nil {
		if err := db.preparePgbench(ctx); err != nil {
			return err
		}
		pgb.url, pgb.db = db.URL, db
		if pgb.dir, err = os.MkdirTemp("", "pkgbench-"); err != nil {
			return err
		}
		defer func() { _ = os.RemoveAll(pgb.dir) }() // a temp dir left behind is harmless
	}

	serverVersion, err := db.serverVersion(ctx)
	if err != nil {
		return err
	}
	out.printf("\npath mode: PM %s (%s); postgres %s, database %s\n", pm.addr, pm.describe(), serverVersion, db.Name)
	if fl != nil {
		out.printf("floor %s (net/http + pgx pool %d, table %s)\n", fl.addr, pm.poolSize(), floorTable)
	}
	if pgb != nil {
		out.printf("%s\n", pgb.version)
	}
	out.printf("\n")

	pmLoad := &loader{base: "http://" + pm.addr, listTag: pathTag}
	var flLoad *loader
	if fl != nil {
		flLoad = &loader{base: "http://" + fl.addr, listTag: pathTag}
	}
	var results []pathResult
	var errs []error
	for _, n := range o.clients {
		sides := []side{{"pm", "PM", pmLoad}}
		if flLoad != nil {
			sides = append(sides, side{"floor", "floor", flLoad})
		}
		// measure runs op against PM and the floor, alternating.
		measure := func(op operation) (pathResult, error) {
			r := pathResult{op: op, clients: n}
			progress(out, op.String()+": "+sideNames(sides, o.rounds), n)
			res, err := alternate(ctx, o, db, op, n, phaseTag(op, n), sides)
			if err != nil {
				return r, err
			}
			r.pm = res[0]
			errs = append(errs, phaseErrors(fmt.Sprintf("PM %s with %d clients", op, n), r.pm))
			if len(res) > 1 {
				r.floor = &res[1]
				errs = append(errs, phaseErrors(fmt.Sprintf("floor %s with %d clients", op, n), res[1]))
			}
			return r, nil
		}
		for _, op := range o.ops {
			if op == opList {
				rows, err := prepareList(ctx, db, pmLoad, flLoad)
				if err != nil {
					return err
				}
				r, err := measure(op)
				if err != nil {
					return err
				}
				r.rows = rows
				results = append(results, r)
				continue
			}
			r, err := measure(op)
			if err != nil {
				return err
			}
			if pgb != nil {
				doc, err := db.sampleDoc(ctx)
				if err != nil {
					return err
				}
				var res pgbenchResult
				switch op {
				case opCreate:
					progress(out, "pgbench insert", n)
					res, err = pgb.insert(ctx, n, o.warmup, o.duration, doc)
				case opGet:
					if err = db.seedSelect(ctx, pmLoad.created(), doc); err != nil {
						return err
					}
					progress(out, "pgbench select", n)
					res, err = pgb.selectByKey(ctx, n, o.warmup, o.duration, pmLoad.created())
				}
				if err != nil {
					return err
				}
				r.pgb = &res
			}
			results = append(results, r)
		}
	}
	out.printf("\n")
	reportPath(out, results)
	if o.cpuprofile != "" {
		reportProfiles(out, o.cpuprofile, results)
	}
	return errors.Join(errs...)
}

// prepareList makes PM's table and the floor's hold the same number of
// packages before a list phase, vacuums and analyzes the database, and
// checks that both servers answer a full page. It returns the row count.
func prepareList(ctx context.Context, db *scratch, pm, fl *loader) (int, error) {
	rows, err := db.packageCount(ctx)
	if err != nil {
		return 0, err
	}
	if fl != nil {
		if err := db.equalizeFloor(ctx, fl, rows); err != nil {
			return 0, err
		}
	}
	if err := db.vacuum(ctx); err != nil {
		return 0, err
	}
	for _, l := range []*loader{pm, fl} {
		if l == nil {
			continue
		}
		got, err := l.listCount(ctx)
		if err != nil {
			return 0, err
		}
		if want := min(rows, listLimit); got != want {
			return 0, fmt.Errorf("list by tag %q at %s: %d items, want %d", l.listTag, l.base, got, want)
		}
	}
	return rows, nil
}

// phaseTag names a path phase in profile names.
func phaseTag(op operation, clients int) string {
	return fmt.Sprintf("%s-c%d", op, clients)
}

// sideNames says what a phase runs, for progress lines.
func sideNames(sides []side, rounds int) string {
	s := sides[0].label
	for _, sd := range sides[1:] {
		s += " and " + sd.label
	}
	if len(sides) > 1 && rounds > 1 {
		s += fmt.Sprintf(" alternating, %d rounds", rounds)
	}
	return s
}

// reportPath prints the path table and the targets.
func reportPath(out *printer, results []pathResult) {
	out.printf("%-6s %7s %8s %9s %8s %9s %11s %10s %9s %9s %9s %9s %9s %9s %11s %11s %4s\n",
		"op", "clients", "PM rps", "floor rps", "PM/floor", "by round", "pgbench tps", "PM/pgbench",
		"PM p50", "PM p99", "floor p50", "floor p99", "PM cpu/op", "fl cpu/op", "PM alloc/op", "fl alloc/op", "≥80%")
	for _, r := range results {
		floorRPS, ratio, rounds, fp50, fp99, fcpu, falloc := "-", "-", "-", "-", "-", "-", "-"
		met := "-"
		if r.floor != nil {
			floorRPS = fmt.Sprintf("%.0f", r.floor.opsPerSec)
			x := r.pm.opsPerSec / r.floor.opsPerSec
			ratio = fmt.Sprintf("%.0f%%", 100*x)
			if lo, hi, ok := r.pm.ratioRange(r.floor); ok {
				rounds = fmt.Sprintf("%.0f-%.0f%%", 100*lo, 100*hi)
			}
			fp50, fp99 = ms(r.floor.latency.P50), ms(r.floor.latency.P99)
			fcpu = us(r.floor.cpuPerOp)
			falloc = r.floor.allocPerOp()
			if r.op != opList {
				met = "no"
				if x >= floorTarget {
					met = "yes"
				}
			}
		}
		pgbTPS, pgbRatio := "", ""
		if r.pgb != nil {
			pgbTPS = fmt.Sprintf("%.0f", r.pgb.tps)
			pgbRatio = fmt.Sprintf("%.0f%%", 100*r.pm.opsPerSec/r.pgb.tps)
		}
		op := r.op.String()
		out.printf("%-6s %7d %8.0f %9s %8s %9s %11s %10s %9s %9s %9s %9s %9s %9s %11s %11s %4s\n",
			op, r.clients, r.pm.opsPerSec, floorRPS, ratio, rounds, pgbTPS, pgbRatio,
			ms(r.pm.latency.P50), ms(r.pm.latency.P99), fp50, fp99, us(r.pm.cpuPerOp), fcpu, r.pm.allocPerOp(), falloc, met)
	}
	for _, r := range results {
		if r.op == opList {
			out.printf("list with %d clients: the tag is on all %d packages of each table, a page is %d\n", r.clients, r.rows, listLimit)
		}
	}
	out.printf("\nAll servers on loopback, driven over HTTP/1.1 keep-alive (one connection per client) from this process;\n")
	out.printf("by round: the smallest and largest PM/floor of the -rounds slice pairs (each PM slice next to a floor slice).\n")
	out.printf("cpu/op and alloc/op (KiB/allocations) are this process's (server and client) per request. Floor: net/http + pgx, raw JSON stored and\n")
	out.printf("served as is. pgbench: -M prepared single-row INSERT / SELECT by key on a table shaped like packages.\n")
	out.printf("Target (issue 9, reported, not asserted): PM create and get >= 80%% of the floor's rate.\n")
}
