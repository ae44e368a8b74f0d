package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// printTable writes the runs so far, one row per deployment count, with the
// targets of issue 11 beside the figures they bound.
func printTable(w io.Writer, o options, rs []result) {
	interval := "default"
	if o.interval > 0 {
		interval = o.interval.String()
	}
	_, _ = fmt.Fprintf(w, "\n%d clusters, %d per deployment, %d clients, intervals %s, idle window %s\n",
		o.clusters, o.perDep, o.clients, interval, o.idle)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	_, _ = fmt.Fprint(tw, "N\tcreates/s\tCRM list calls/pass\tall CRM calls/pass\tpasses\tidle PM CPU s/min\tPM CPU % of core\tidle CRM CPU s/min\tRSS MiB\tpeak MiB\truntimes p50\tp99\theal passes\theal s\t\n")
	for _, r := range rs {
		mins := r.idle.Minutes()
		perPass, listPerPass := 0.0, 0.0
		if r.passes > 0 {
			perPass = float64(r.crmCalls) / r.passes
			listPerPass = float64(r.listCalls) / r.passes
		}
		passes := fmt.Sprintf("%.1f", r.passes)
		if !r.passesExact {
			passes += "~"
		}
		heal := "-"
		healS := "-"
		switch {
		case r.healSkipped != "":
			heal = r.healSkipped
		case !r.healed && r.healTime > 0:
			heal, healS = "not whole", fmt.Sprintf("%.0f", r.healTime.Seconds())
		case r.healed:
			heal = fmt.Sprintf("%.0f", r.healPasses)
			if !r.passesExact {
				heal = fmt.Sprintf("%.1f~", r.healPasses)
			}
			healS = fmt.Sprintf("%.1f", r.healTime.Seconds())
		}
		_, _ = fmt.Fprintf(tw, "%d\t%.0f\t%.1f\t%.1f\t%s\t%.2f\t%.2f%%\t%.2f\t%.0f\t%.0f\t%s\t%s\t%s\t%s\t\n",
			r.n, r.createsPerS, listPerPass, perPass, passes,
			r.pmCPU.Seconds()/mins, 100*r.pmCPU.Seconds()/r.idle.Seconds(), r.crmCPU.Seconds()/mins,
			float64(r.rss)/(1<<20), float64(r.peak)/(1<<20),
			ms(r.runtimes.P50), ms(r.runtimes.P99), heal, healS)
	}
	_ = tw.Flush()
	for _, r := range rs {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(r.callsByKind)) {
			parts = append(parts, fmt.Sprintf("%s=%d", k, r.callsByKind[k]))
		}
		_, _ = fmt.Fprintf(w, "N=%d idle CRM calls: %s; failed creates %d\n", r.n, strings.Join(parts, " "), r.createErrors)
	}
	_, _ = fmt.Fprintf(w, "targets: creates/s at the largest N ≥ 90%% of the smallest; CRM list calls/pass ≤ %d (2 × clusters; all calls add the health refresh, 1 per cluster per CRM_HEALTH_CHECK_INTERVAL); PM CPU ≤ 2%% of a core at 10k; RSS ≤ 128 MiB at 10k; runtimes p50 ≤ 10 ms at 10k; heal ≤ 2 passes\n",
		2*o.clusters)
	if len(rs) > 1 {
		first, last := rs[0], rs[len(rs)-1]
		_, _ = fmt.Fprintf(w, "creates/s at N=%d is %.0f%% of N=%d\n", last.n, 100*last.createsPerS/first.createsPerS, first.n)
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }
