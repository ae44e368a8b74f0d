package main

import (
	"encoding/json"
	"slices"
	"testing"
)

func TestCatalogue(t *testing.T) {
	t.Parallel()
	for _, n := range []int{100, 103, 100_000} {
		c := newCatalogue(n)
		rare, half := 0, 0
		for i := range n {
			tags := c.tags(i)
			if slices.Contains(tags, rareTag) {
				rare++
			}
			if slices.Contains(tags, halfTag) {
				half++
			}
		}
		if rare != c.tagged(rareTag) || rare != rareCount {
			t.Errorf("n=%d: %d packages carry %q, want %d", n, rare, rareTag, rareCount)
		}
		if half != c.tagged(halfTag) {
			t.Errorf("n=%d: %d packages carry %q, tagged says %d", n, half, halfTag, c.tagged(halfTag))
		}
		if !c.rare(n-1) && n%rareCount == 0 {
			t.Errorf("n=%d: the last package does not carry %q", n, rareTag)
		}
		if c.name(0) >= c.name(n-1) {
			t.Errorf("n=%d: names do not sort as numbers: %q, %q", n, c.name(0), c.name(n-1))
		}
		var body struct {
			Name     string `json:"name"`
			Metadata struct {
				Tags []string `json:"tags"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(c.body(n-1), &body); err != nil {
			t.Fatalf("n=%d: body is not JSON: %v", n, err)
		}
		if body.Name != c.name(n-1) || !slices.Equal(body.Metadata.Tags, c.tags(n-1)) {
			t.Errorf("n=%d: body has name %q tags %q, want %q %q", n, body.Name, body.Metadata.Tags, c.name(n-1), c.tags(n-1))
		}
	}
}

func TestParseFlagsModes(t *testing.T) {
	t.Parallel()
	o, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !o.floor || !o.pgbench || o.mode != "path" || !slices.Equal(o.ops, []operation{opCreate, opGet, opList}) || o.rounds != 4 {
		t.Errorf("defaults: %+v", o)
	}
	for _, bad := range [][]string{
		{"-ops", "get"},
		{"-ops", "create,delete"},
		{"-compare", "nginx"},
		{"-mode", "fast"},
		{"-rounds", "0"},
		{"-clients", "0"},
		{"-scale-storage", "sqlite"},
		{"-scale-packages", "10"},
		{"-duration", "100ms"},
	} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	o, err = parseFlags([]string{"-ops", "list,create", "-compare", ""})
	if err != nil {
		t.Fatal(err)
	}
	if o.floor || o.pgbench || !slices.Equal(o.ops, []operation{opCreate, opList}) {
		t.Errorf("-ops list,create -compare '': %+v", o)
	}
}
