package main

import (
	"fmt"
	"regexp"
	"time"

	"github.com/oaas/pm/bench/internal/cpusplit"
)

// The groups CPU time is split into, in the order a frame is tested. A
// sample goes to the group of its innermost frame that any rule claims;
// runtime, syscall and small standard-library frames belong to no group, so
// allocation and socket I/O count for the code that asked for them.
var profileRules = func() []cpusplit.Rule {
	r := func(group, re string) cpusplit.Rule {
		return cpusplit.Rule{Group: group, Match: regexp.MustCompile(re)}
	}
	return []cpusplit.Rule{
		{Group: "GC (background and assists)", Whole: true,
			Match: regexp.MustCompile(`^runtime\.(gcBgMarkWorker|gcAssistAlloc|bgsweep|bgscavenge)$`)},
		// Helpers everyone calls: charged to their callers.
		r("", `^net/http\.(Header\.|\(\*body\)|\(\*bodyEOFSignal\)|\(\*maxBytesReader\)|MaxBytesReader|CanonicalHeaderKey|\(\*Request\)\.(Context|WithContext|PathValue|Clone))`),
		r("load client (bench)", `^main\.\(\*loader\)|^net/http\.(\(\*persistConn\)|\(\*Transport\)|\(\*Client\)|send$|setRequestCancel|\(\*Request\)\.write|\(\*transferWriter\)|ReadResponse|\(\*readTrackingBody\)|\(\*connectMethod)`),
		r("floor handlers", `^main\.\(\*floor\)|^main\.writeJSONBytes`),
		r("PM REST wrapper (internal/server)", `^github\.com/oaas/pm/internal/server\.`),
		r("vanguard transcoding", `^connectrpc\.com/vanguard\.`),
		r("connect", `^connectrpc\.com/connect\.`),
		r("protojson", `^google\.golang\.org/protobuf/(encoding/protojson|internal/encoding/json)\.`),
		r("proto (binary, clone, reflection)", `^google\.golang\.org/protobuf/`),
		r("encoding/json", `^encoding/json\.`),
		r("logging (slog)", `^log/slog\.`),
		// Closures inlined into app.New carry its name.
		r("metrics", `^github\.com/prometheus/|^github\.com/oaas/pm/internal/telemetry\.|\(\*Metrics\)\.Interceptor`),
		r("PM api (handlers, interceptor)", `^github\.com/oaas/pm/internal/(api|correlation|fault)\.|^github\.com/oaas/pm/internal/app\.New\.(Interceptor|Recover)`),
		r("PM catalog (validation)", `^github\.com/oaas/pm/internal/catalog\.`),
		r("PM store", `^github\.com/oaas/pm/internal/store/`),
		r("pgx driver and pool", `^github\.com/jackc/`),
		r("PM other", `^github\.com/oaas/pm/`),
		r("HTTP server (net/http)", `^net/http\.`),
	}
}()

// profileProbes are inclusive shares: time under any frame matching.
var profileProbes = func() []cpusplit.Probe {
	p := func(name, re string) cpusplit.Probe { return cpusplit.Probe{Name: name, Match: regexp.MustCompile(re)} }
	return []cpusplit.Probe{
		p("vanguard: REST request -> proto", `^connectrpc\.com/vanguard\.(\(\*transformingReader\)|restClientProtocol\.prepareUnmarshalledRequest)`),
		p("connect: read+decode request", `^connectrpc\.com/connect\.receiveUnaryRequest`),
		p("handler (api, catalog, store)", `^github\.com/oaas/pm/internal/api\.\(\*Packages\)\.`),
		p("  catalog.ValidatePackage", `^github\.com/oaas/pm/internal/catalog\.ValidatePackage$`),
		p("  store: document encode", `^github\.com/oaas/pm/internal/store/.*\.encode$`),
		p("  store: document decode", `^github\.com/oaas/pm/internal/store/.*\.decode$`),
		p("  pgx (query round trip)", `^github\.com/jackc/`),
		p("  proto.Clone", `^google\.golang\.org/protobuf/proto\.(Clone|CloneOf)`),
		p("connect: encode+write response", `^connectrpc\.com/connect\.\(\*connectUnaryHandlerConn\)\.Send`),
		p("vanguard: proto -> REST response", `^connectrpc\.com/vanguard\.(\(\*transformingWriter\)|\(\*responseWriter\)\.close)`),
		p("REST wrapper readBody+flushTo", `^github\.com/oaas/pm/internal/server\.(readBody|\(\*bufferedWriter\)\.flushTo)$`),
		p("slog", `^log/slog\.`),
		p("malloc (runtime.mallocgc)", `^runtime\.mallocgc$`),
		p("syscalls", `^(syscall|internal/runtime/syscall|runtime/internal/syscall)\.`),
	}
}()

// reportProfiles prints, for each op, where the CPU of each measured phase
// went, in microseconds per request, PM next to the floor.
func reportProfiles(out *printer, dir string, results []pathResult) {
	out.printf("\nWhere the CPU goes (from -cpuprofile %s), µs of this process's CPU per request; one column per phase.\n", dir)
	out.printf("Each sample counts once, for the innermost frame a group claims (allocation and syscalls count for their caller).\n")
	byOp := map[operation][]pathResult{}
	var ops []operation
	for _, r := range results {
		if _, ok := byOp[r.op]; !ok {
			ops = append(ops, r.op)
		}
		byOp[r.op] = append(byOp[r.op], r)
	}
	for _, op := range ops {
		var cols []string
		var splits []cpusplit.Split
		var reqs []int
		for _, r := range byOp[op] {
			sides := []struct {
				name string
				s    *stats
			}{{"pm", &r.pm}, {"floor", r.floor}}
			for _, side := range sides {
				if side.s == nil {
					continue
				}
				sp, err := profileSplit(dir, side.name, phaseTag(op, r.clients))
				if err != nil {
					out.printf("  %v\n", err)
					continue
				}
				cols = append(cols, fmt.Sprintf("%s c%d", side.name, r.clients))
				splits = append(splits, sp)
				reqs = append(reqs, side.s.ops)
			}
		}
		if len(cols) == 0 {
			continue
		}
		out.printf("\n%-38s", op.String())
		for _, c := range cols {
			out.printf(" %10s", c)
		}
		out.printf("\n")
		row := func(name string, get func(cpusplit.Split) time.Duration) {
			out.printf("%-38s", name)
			for i, sp := range splits {
				out.printf(" %10s", perReq(get(sp), reqs[i]))
			}
			out.printf("\n")
		}
		row("total sampled", func(s cpusplit.Split) time.Duration { return s.Total })
		groups := make([]string, 0, len(profileRules)+1)
		seen := map[string]bool{}
		for _, r := range profileRules {
			if r.Group != "" && !seen[r.Group] {
				seen[r.Group] = true
				groups = append(groups, r.Group)
			}
		}
		groups = append(groups, cpusplit.Other)
		for _, g := range groups {
			any := false
			for _, sp := range splits {
				any = any || sp.Groups[g] > 0
			}
			if any {
				row("  "+g, func(s cpusplit.Split) time.Duration { return s.Groups[g] })
			}
		}
		out.printf("%-38s\n", "inclusive (overlapping):")
		for _, p := range profileProbes {
			row("  "+p.Name, func(s cpusplit.Split) time.Duration { return s.Probes[p.Name] })
		}
	}
}

// perReq formats d spread over n requests in microseconds.
func perReq(d time.Duration, n int) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(d)/float64(n)/float64(time.Microsecond))
}

// us formats a duration in microseconds.
func us(d time.Duration) string {
	return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
}
