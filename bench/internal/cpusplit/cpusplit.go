// Package cpusplit reads a Go CPU profile (what runtime/pprof writes) and
// splits its CPU time into named groups, so a benchmark can print where a
// phase's time went, and how that changed between runs, without a pprof
// session per profile.
//
// Two views are computed:
//
//   - Exclusive: every sample is charged to exactly one group, the first
//     group (in the order given) that matches the innermost frame matching
//     any group, walking from the leaf towards the root. Frames that match
//     no group (the runtime, sync, syscall, strings, ...) are skipped, so an
//     allocation or a write system call is charged to the code that asked
//     for it. Samples whose stack matches a Rule with Whole set are charged
//     to it first (GC workers, for instance); samples with no matching frame
//     go to Other.
//   - Inclusive: for each Probe, the share of samples with at least one
//     frame matching it (pprof's "cum" of a function family).
//
// Only the standard library and protowire are used: the profile format is a
// gzipped profile.proto message, and the few fields read here are stable.
package cpusplit

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// Other is the group of samples no rule matched.
const Other = "other (runtime, scheduler)"

// Rule is one group of the exclusive view.
type Rule struct {
	// Group names the group; several rules may share one. A rule with no
	// Group makes the frames it matches transparent: the walk goes on to
	// their callers (for helpers many groups call, such as
	// net/http.Header.Set, listed before a rule that would claim them).
	Group string
	// Match is matched against function names ("net/http.(*conn).serve").
	Match *regexp.Regexp
	// Whole charges a sample to Group when any frame of its stack matches,
	// before the leaf-first walk (for work that runs on its own goroutines
	// whatever triggered it, such as the garbage collector).
	Whole bool
}

// Probe is one inclusive measurement.
type Probe struct {
	Name  string
	Match *regexp.Regexp
}

// Split is the result of one profile.
type Split struct {
	// Total is the CPU time the profile sampled.
	Total time.Duration
	// Groups is the exclusive view: CPU time per group (and Other).
	Groups map[string]time.Duration
	// Probes is the inclusive view: CPU time per probe name.
	Probes map[string]time.Duration
}

// File reads the profile at path and splits it.
func File(path string, rules []Rule, probes []Probe) (Split, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return Split{}, err
	}
	return Parse(raw, rules, probes)
}

// Parse splits a profile, gzipped or not.
func Parse(raw []byte, rules []Rule, probes []Probe) (Split, error) {
	if len(raw) >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return Split{}, err
		}
		if raw, err = io.ReadAll(zr); err != nil {
			return Split{}, fmt.Errorf("decompressing profile: %w", err)
		}
	}
	p, err := decode(raw)
	if err != nil {
		return Split{}, fmt.Errorf("decoding profile: %w", err)
	}
	return p.split(rules, probes)
}

// profile is the part of profile.proto that splitting needs.
type profile struct {
	strings    []string
	functions  map[uint64]int64    // function id -> name string index
	locations  map[uint64][]uint64 // location id -> function ids, innermost first
	samples    []sample
	valueTypes []int64 // string index of each sample value's type
}

type sample struct {
	locations []uint64 // leaf first
	values    []int64
}

// split charges each sample's CPU nanoseconds.
func (p *profile) split(rules []Rule, probes []Probe) (Split, error) {
	vi := -1
	for i, t := range p.valueTypes {
		if t >= 0 && int(t) < len(p.strings) && p.strings[t] == "cpu" {
			vi = i
		}
	}
	if vi < 0 {
		return Split{}, errors.New("not a CPU profile (no \"cpu\" sample value)")
	}
	out := Split{Groups: map[string]time.Duration{}, Probes: map[string]time.Duration{}}
	memo := map[int64]int{} // name index -> rule index, -1 for none
	ruleOf := func(nameIdx int64) int {
		if r, ok := memo[nameIdx]; ok {
			return r
		}
		r := -1
		name := p.name(nameIdx)
		for i, rule := range rules {
			if !rule.Whole && rule.Match.MatchString(name) {
				r = i
				break
			}
		}
		memo[nameIdx] = r
		return r
	}
	for _, s := range p.samples {
		if vi >= len(s.values) {
			continue
		}
		d := time.Duration(s.values[vi])
		out.Total += d
		var frames []int64 // name indexes, leaf first
		for _, loc := range s.locations {
			for _, fn := range p.locations[loc] {
				frames = append(frames, p.functions[fn])
			}
		}
		out.Groups[p.charge(frames, rules, ruleOf)] += d
		for _, pr := range probes {
			for _, f := range frames {
				if pr.Match.MatchString(p.name(f)) {
					out.Probes[pr.Name] += d
					break
				}
			}
		}
	}
	return out, nil
}

// charge returns the group a stack is charged to.
func (p *profile) charge(frames []int64, rules []Rule, ruleOf func(int64) int) string {
	for _, r := range rules {
		if !r.Whole {
			continue
		}
		for _, f := range frames {
			if r.Match.MatchString(p.name(f)) {
				return r.Group
			}
		}
	}
	for _, f := range frames {
		if i := ruleOf(f); i >= 0 && rules[i].Group != "" {
			return rules[i].Group
		}
	}
	return Other
}

func (p *profile) name(i int64) string {
	if i < 0 || int(i) >= len(p.strings) {
		return ""
	}
	return p.strings[i]
}

// decode reads the fields of profile.proto that split uses:
// Profile{1 sample_type, 2 sample, 4 location, 5 function, 6 string_table},
// ValueType{1 type}, Sample{1 location_id, 2 value},
// Location{1 id, 4 line}, Line{1 function_id}, Function{1 id, 2 name}.
func decode(b []byte) (*profile, error) {
	p := &profile{functions: map[uint64]int64{}, locations: map[uint64][]uint64{}}
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1:
			var t int64
			err := fields(v, func(n protowire.Number, _ protowire.Type, _ []byte, x uint64) error {
				if n == 1 {
					t = int64(x)
				}
				return nil
			})
			p.valueTypes = append(p.valueTypes, t)
			return err
		case 2:
			var s sample
			err := fields(v, func(n protowire.Number, t protowire.Type, raw []byte, x uint64) error {
				switch n {
				case 1:
					return varints(t, raw, x, func(u uint64) { s.locations = append(s.locations, u) })
				case 2:
					return varints(t, raw, x, func(u uint64) { s.values = append(s.values, int64(u)) })
				}
				return nil
			})
			p.samples = append(p.samples, s)
			return err
		case 4:
			var id uint64
			var fns []uint64
			err := fields(v, func(n protowire.Number, t protowire.Type, raw []byte, x uint64) error {
				switch {
				case n == 1:
					id = x
				case n == 4 && t == protowire.BytesType:
					return fields(raw, func(ln protowire.Number, _ protowire.Type, _ []byte, lx uint64) error {
						if ln == 1 {
							fns = append(fns, lx)
						}
						return nil
					})
				}
				return nil
			})
			p.locations[id] = fns
			return err
		case 5:
			var id uint64
			var name int64
			err := fields(v, func(n protowire.Number, _ protowire.Type, _ []byte, x uint64) error {
				switch n {
				case 1:
					id = x
				case 2:
					name = int64(x)
				}
				return nil
			})
			p.functions[id] = name
			return err
		case 6:
			p.strings = append(p.strings, string(v))
		}
		return nil
	})
	return p, err
}

// fields calls f for each field of the message b: v holds a length-delimited
// field's bytes, x a varint's value.
func fields(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var (
			v []byte
			x uint64
		)
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := f(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

// varints calls f for a repeated varint field, packed or not.
func varints(typ protowire.Type, raw []byte, x uint64, f func(uint64)) error {
	if typ == protowire.VarintType {
		f(x)
		return nil
	}
	for len(raw) > 0 {
		u, n := protowire.ConsumeVarint(raw)
		if n < 0 {
			return protowire.ParseError(n)
		}
		f(u)
		raw = raw[n:]
	}
	return nil
}

// Add adds o's times to s (profiles of slices of one phase).
func (s *Split) Add(o Split) {
	if s.Groups == nil {
		s.Groups = map[string]time.Duration{}
	}
	if s.Probes == nil {
		s.Probes = map[string]time.Duration{}
	}
	s.Total += o.Total
	for k, v := range o.Groups {
		s.Groups[k] += v
	}
	for k, v := range o.Probes {
		s.Probes[k] += v
	}
}
