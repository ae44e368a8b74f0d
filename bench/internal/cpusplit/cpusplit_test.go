package cpusplit

import (
	"bytes"
	"compress/gzip"
	"regexp"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// builder writes a minimal profile.proto message.
type builder struct {
	strs  []string
	funcs map[string]uint64
	body  []byte
}

func newBuilder() *builder {
	b := &builder{strs: []string{""}, funcs: map[string]uint64{}}
	vt := func(typ string) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), uint64(b.str(typ)))
	}
	for _, t := range []string{"samples", "cpu"} {
		b.body = protowire.AppendBytes(protowire.AppendTag(b.body, 1, protowire.BytesType), vt(t))
	}
	return b
}

func (b *builder) str(s string) int {
	for i, v := range b.strs {
		if v == s {
			return i
		}
	}
	b.strs = append(b.strs, s)
	return len(b.strs) - 1
}

// fn returns the id of function name, defining it and a location holding
// only it (same id) on first use.
func (b *builder) fn(name string) uint64 {
	if id, ok := b.funcs[name]; ok {
		return id
	}
	id := uint64(len(b.funcs) + 1)
	b.funcs[name] = id
	var f []byte
	f = protowire.AppendVarint(protowire.AppendTag(f, 1, protowire.VarintType), id)
	f = protowire.AppendVarint(protowire.AppendTag(f, 2, protowire.VarintType), uint64(b.str(name)))
	b.body = protowire.AppendBytes(protowire.AppendTag(b.body, 5, protowire.BytesType), f)
	var line []byte
	line = protowire.AppendVarint(protowire.AppendTag(line, 1, protowire.VarintType), id)
	var loc []byte
	loc = protowire.AppendVarint(protowire.AppendTag(loc, 1, protowire.VarintType), id)
	loc = protowire.AppendBytes(protowire.AppendTag(loc, 4, protowire.BytesType), line)
	b.body = protowire.AppendBytes(protowire.AppendTag(b.body, 4, protowire.BytesType), loc)
	return id
}

// sample adds a sample of d CPU time with the stack given leaf first; the
// location ids are packed as Go writes them.
func (b *builder) sample(d time.Duration, stack ...string) {
	var ids []byte
	for _, f := range stack {
		ids = protowire.AppendVarint(ids, b.fn(f))
	}
	var vals []byte
	vals = protowire.AppendVarint(vals, 1)
	vals = protowire.AppendVarint(vals, uint64(d))
	var s []byte
	s = protowire.AppendBytes(protowire.AppendTag(s, 1, protowire.BytesType), ids)
	s = protowire.AppendBytes(protowire.AppendTag(s, 2, protowire.BytesType), vals)
	b.body = protowire.AppendBytes(protowire.AppendTag(b.body, 2, protowire.BytesType), s)
}

func (b *builder) gzipped(t *testing.T) []byte {
	out := b.body
	for _, s := range b.strs {
		out = protowire.AppendBytes(protowire.AppendTag(out, 6, protowire.BytesType), []byte(s))
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(out); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestParse(t *testing.T) {
	t.Parallel()
	b := newBuilder()
	b.sample(10*time.Millisecond, "runtime.mallocgc", "google.golang.org/protobuf/encoding/protojson.Unmarshal", "connectrpc.com/vanguard.(*op).handle", "net/http.(*conn).serve")
	b.sample(20*time.Millisecond, "syscall.Syscall", "internal/poll.(*FD).Write", "net/http.(*conn).serve")
	b.sample(5*time.Millisecond, "runtime.scanobject", "runtime.gcDrain", "runtime.gcBgMarkWorker")
	b.sample(7*time.Millisecond, "runtime.findRunnable", "runtime.schedule")
	b.sample(3*time.Millisecond, "connectrpc.com/vanguard.(*op).handle", "net/http.(*conn).serve")
	b.sample(2*time.Millisecond, "net/http.Header.Set", "connectrpc.com/vanguard.(*op).handle", "net/http.(*conn).serve")
	rules := []Rule{
		{Group: "gc", Match: regexp.MustCompile(`^runtime\.gcBgMarkWorker$`), Whole: true},
		{Match: regexp.MustCompile(`^net/http\.Header\.`)},
		{Group: "protojson", Match: regexp.MustCompile(`^google\.golang\.org/protobuf/encoding/protojson\.`)},
		{Group: "vanguard", Match: regexp.MustCompile(`^connectrpc\.com/vanguard\.`)},
		{Group: "http", Match: regexp.MustCompile(`^net/http\.`)},
	}
	probes := []Probe{
		{Name: "vanguard", Match: regexp.MustCompile(`^connectrpc\.com/vanguard\.`)},
		{Name: "syscall", Match: regexp.MustCompile(`^syscall\.`)},
	}
	s, err := Parse(b.gzipped(t), rules, probes)
	if err != nil {
		t.Fatal(err)
	}
	ms := time.Millisecond
	if s.Total != 47*ms {
		t.Errorf("total %v, want 47ms", s.Total)
	}
	want := map[string]time.Duration{"protojson": 10 * ms, "http": 20 * ms, "gc": 5 * ms, Other: 7 * ms, "vanguard": 5 * ms}
	for g, d := range want {
		if s.Groups[g] != d {
			t.Errorf("group %q: %v, want %v (all: %v)", g, s.Groups[g], d, s.Groups)
		}
	}
	if len(s.Groups) != len(want) {
		t.Errorf("groups %v, want %v", s.Groups, want)
	}
	if s.Probes["vanguard"] != 15*ms || s.Probes["syscall"] != 20*ms {
		t.Errorf("probes %v, want vanguard 15ms, syscall 20ms", s.Probes)
	}
}

func TestAdd(t *testing.T) {
	t.Parallel()
	var s Split
	a := Split{Total: 3, Groups: map[string]time.Duration{"x": 2, Other: 1}, Probes: map[string]time.Duration{"p": 1}}
	s.Add(a)
	s.Add(a)
	if s.Total != 6 || s.Groups["x"] != 4 || s.Groups[Other] != 2 || s.Probes["p"] != 2 {
		t.Errorf("got %+v", s)
	}
}

func TestParseRejectsNonCPU(t *testing.T) {
	t.Parallel()
	if _, err := Parse([]byte{0x0a, 0x00}, nil, nil); err == nil {
		t.Error("a profile without a cpu value parsed")
	}
	if _, err := Parse([]byte{0x0a, 0x05}, nil, nil); err == nil {
		t.Error("a truncated profile parsed")
	}
}
