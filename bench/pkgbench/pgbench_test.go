package main

import (
	"testing"
	"time"
)

// pg15Output is pgbench 15's report of a -T run.
const pg15Output = `pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: /tmp/pkgbench-1/insert.sql
scaling factor: 1
query mode: prepared
number of clients: 2
number of threads: 2
maximum number of tries: 1
duration: 1 s
number of transactions actually processed: 5155
number of failed transactions: 3 (0.058%)
latency average = 0.387 ms
initial connection time = 4.123 ms
tps = 5163.431928 (without initial connection time)
`

func TestParsePgbench(t *testing.T) {
	r, err := parsePgbench(pg15Output)
	if err != nil {
		t.Fatal(err)
	}
	if r.tps != 5163.431928 || r.latency != 387*time.Microsecond || r.failed != 3 {
		t.Errorf("got %+v", r)
	}
	if _, err := parsePgbench("pgbench: error: connection failed\n"); err == nil {
		t.Error("no error for output without figures")
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-clients", "1, 32", "-duration", "2s"})
	if err != nil || len(o.clients) != 2 || o.clients[1] != 32 || o.duration != 2*time.Second {
		t.Errorf("got %+v, %v", o, err)
	}
	for _, bad := range [][]string{{"-clients", "0"}, {"-clients", "x"}, {"-duration", "10ms"}, {"extra"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
