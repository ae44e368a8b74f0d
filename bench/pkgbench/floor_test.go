package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/oaas/pm/bench/internal/scratchdb"
)

// setupFloor serves a floor on a scratch database of PM_TEST_DATABASE_URL,
// or skips the test when it is not set.
func setupFloor(t *testing.T) string {
	t.Helper()
	url := os.Getenv("PM_TEST_DATABASE_URL")
	if url == "" {
		t.Skip("PM_TEST_DATABASE_URL not set")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	db, err := scratchdb.Create(ctx, url, "pkgbenchtest_")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	})
	fl, err := startFloor(ctx, db.URL, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fl.stop(); err != nil {
			t.Error(err)
		}
	})
	return "http://" + fl.addr
}

func call(t *testing.T, method, url string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func TestFloor(t *testing.T) {
	t.Parallel()
	base := setupFloor(t)
	cat := newCatalogue(100)
	for _, i := range []int{3, 1, 2, 0} {
		if code, b := call(t, http.MethodPost, base+"/api/v1/packages", cat.body(i)); code != http.StatusCreated || !bytes.Equal(b, cat.body(i)) {
			t.Fatalf("create %d: %d %s", i, code, b)
		}
	}
	if code, _ := call(t, http.MethodPost, base+"/api/v1/packages", cat.body(1)); code != http.StatusConflict {
		t.Errorf("second create of one name: %d, want 409", code)
	}
	if code, _ := call(t, http.MethodPost, base+"/api/v1/packages", []byte(`{"version": "1"}`)); code != http.StatusBadRequest {
		t.Errorf("create without a name: %d, want 400", code)
	}

	code, b := call(t, http.MethodGet, base+"/api/v1/packages/"+cat.name(2), nil)
	var got, want any
	if err := json.Unmarshal(b, &got); code != http.StatusOK || err != nil {
		t.Fatalf("get: %d %s", code, b)
	}
	_ = json.Unmarshal(cat.body(2), &want) // the catalogue's bodies are JSON (TestCatalogue)
	if gj, _ := json.Marshal(got); !bytes.Equal(gj, mustJSON(t, want)) {
		t.Errorf("get returned %s, want the created body", b)
	}
	if code, _ := call(t, http.MethodGet, base+"/api/v1/packages/nope", nil); code != http.StatusNotFound {
		t.Errorf("get of an absent name: %d, want 404", code)
	}

	// Packages 0 and 2 carry "half"; none of these "rare" (100 packages: 19, 39, ...).
	for tag, names := range map[string][]string{
		halfTag: {cat.name(0), cat.name(2)},
		"demo":  {cat.name(0), cat.name(1)},
		rareTag: {},
	} {
		limit := "20"
		if tag == "demo" {
			limit = "2"
		}
		code, b := call(t, http.MethodGet, base+"/api/v1/packages?tags="+tag+"&limit="+limit, nil)
		var page []struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(b, &page); code != http.StatusOK || err != nil {
			t.Fatalf("list %s: %d %s", tag, code, b)
		}
		var gotNames []string
		for _, p := range page {
			gotNames = append(gotNames, p.Name)
		}
		if !slices.Equal(gotNames, names) {
			t.Errorf("list %s: %q, want %q", tag, gotNames, names)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
