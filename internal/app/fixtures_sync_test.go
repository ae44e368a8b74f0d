package app_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Fixture locations relative to this package's directory (where go test
// runs): the repo copy the tests read, and the shared originals, which exist
// only on dev machines next to the repo.
const (
	repoFixtures   = "../../testdata/fixtures"
	sharedFixtures = "../../../shared/fixtures"
)

// TestFixturesInSync checks that testdata/fixtures is an exact copy of
// ../shared/fixtures: the same files, byte for byte. Where the shared
// directory is absent (CI, a fresh clone) there is nothing to compare and
// the test is skipped, saying so.
func TestFixturesInSync(t *testing.T) {
	t.Parallel()
	info, err := os.Stat(sharedFixtures)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		abs, _ := filepath.Abs(sharedFixtures)
		t.Skipf("compared nothing: %s (<repo>/../shared/fixtures) does not exist here; "+
			"it exists only on dev machines, and testdata/fixtures is the copy the tests use", abs)
	case err != nil:
		t.Fatalf("stat %s: %v", sharedFixtures, err)
	case !info.IsDir():
		t.Fatalf("%s is not a directory", sharedFixtures)
	}

	shared := readTree(t, sharedFixtures)
	repo := readTree(t, repoFixtures)
	if len(shared) == 0 {
		t.Fatalf("%s has no files; is it the right directory?", sharedFixtures)
	}

	var problems []string
	for _, name := range sortedKeys(shared) {
		got, ok := repo[name]
		switch {
		case !ok:
			problems = append(problems, "missing from testdata/fixtures: "+name)
		case !bytes.Equal(got, shared[name]):
			problems = append(problems, "differs from ../shared/fixtures: testdata/fixtures/"+name)
		}
	}
	for _, name := range sortedKeys(repo) {
		if _, ok := shared[name]; !ok {
			problems = append(problems, "only in testdata/fixtures (not in ../shared/fixtures): "+name)
		}
	}
	if len(problems) > 0 {
		t.Errorf("testdata/fixtures is out of sync with ../shared/fixtures:\n  %s\n"+
			"fix, from the repo root: cp -r ../shared/fixtures/. testdata/fixtures/ "+
			"(and delete the files that exist only in testdata/fixtures)",
			strings.Join(problems, "\n  "))
		return
	}
	t.Logf("compared %d files: testdata/fixtures matches ../shared/fixtures", len(shared))
}

// readTree returns every regular file under root by slash-separated path
// relative to root. Anything that is neither a directory nor a regular file
// (a symlink, say) fails the test: the copy must be plain files.
func readTree(t *testing.T, root string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			t.Errorf("%s: not a regular file (%s)", path, d.Type())
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil {
		t.Fatalf("reading %s: %v", root, err)
	}
	return files
}

// sortedKeys returns m's keys in order, so reports are stable.
func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
