// Package fieldcheck applies PM's field-validation policy to JSON request
// bodies before they are decoded into protobuf messages, the same way for
// REST and for Connect/gRPC JSON: it walks the JSON against the message's
// descriptor, reports every unknown field by its path, removes those fields
// (so that decoding can stay strict about everything else), renames field
// aliases, checks enum names, and checks that each value has the JSON kind
// its field needs. Binary messages get the same policy from Unknown and
// CheckEnums.
//
// The walk streams tokens (go-json-experiment/json/jsontext, the reference
// implementation of encoding/json/v2) and re-encodes the document only when
// something must change, so a clean body costs one scan.
package fieldcheck

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json/jsontext"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// MaxReported caps how many unknown fields one request reports; past it,
// the last entry says how many more there were.
const MaxReported = 256

// Aliases maps a message's full name to its alias → field name pairs: an
// older spelling of a field that is accepted on input and renamed.
type Aliases map[protoreflect.FullName]map[string]protoreflect.Name

// Options tune a check.
type Options struct {
	// Aliases are accepted as other names of fields.
	Aliases Aliases
	// StringifyMapScalars takes numbers and booleans inside map<string,
	// string> fields as strings: hand-written YAML says `HTTP_PORT: 80` and
	// means "80".
	StringifyMapScalars bool
}

// Result is the outcome of a check.
type Result struct {
	// JSON is the document to decode: data itself when nothing changed,
	// else a copy without unknown fields and with aliases renamed.
	JSON []byte
	// Unknown lists the paths of unknown fields in document order, e.g.
	// `deployments[0].odgm.foo`; at most MaxReported (+1 summary entry).
	Unknown []string
}

// Problems is a check's failure: every value that cannot be taken, each
// naming its field. Its Error joins them with "; ".
type Problems []string

func (p Problems) Error() string { return strings.Join(p, "; ") }

// SyntaxError is malformed JSON (including invalid UTF-8 and duplicate
// names); its message is written for clients.
type SyntaxError struct {
	// Msg describes the problem and where it is.
	Msg string
}

func (e *SyntaxError) Error() string { return e.Msg }

// CheckJSON checks data, a JSON document of message md, against the policy.
// It returns a *SyntaxError for malformed JSON and Problems for values that
// cannot be taken (unknown enum names, wrong kinds, an alias given together
// with its field); unknown fields are not an error, they are reported in the
// Result for the caller's policy (warn or reject).
func CheckJSON(md protoreflect.MessageDescriptor, data []byte, opts Options) (Result, error) {
	w := walker{opts: opts}
	if err := w.run(md, data, nil); err != nil {
		return Result{}, err
	}
	if len(w.problems) > 0 {
		return Result{}, w.problems
	}
	res := Result{JSON: data, Unknown: w.unknown}
	if w.extra > 0 {
		res.Unknown = append(res.Unknown, fmt.Sprintf("... and %d more", w.extra))
	}
	if !w.rewrite {
		return res, nil
	}
	var buf bytes.Buffer
	buf.Grow(len(data))
	enc := jsontext.NewEncoder(&buf)
	w2 := walker{opts: opts}
	if err := w2.run(md, data, enc); err != nil {
		return Result{}, err
	}
	res.JSON = buf.Bytes()
	return res, nil
}

// walker is one pass over a document. With enc set it also writes the
// document, minus unknown fields and with aliases renamed.
type walker struct {
	opts     Options
	dec      *jsontext.Decoder
	enc      *jsontext.Encoder
	unknown  []string
	extra    int
	problems Problems
	// rewrite: the document must be re-encoded to be decoded strictly.
	rewrite bool
}

func (w *walker) run(md protoreflect.MessageDescriptor, data []byte, enc *jsontext.Encoder) error {
	w.dec = jsontext.NewDecoder(bytes.NewReader(data))
	w.enc = enc
	if w.dec.PeekKind() != '{' {
		if _, err := w.dec.ReadToken(); err != nil {
			return w.syntax(err)
		}
		return &SyntaxError{Msg: "invalid JSON body: expected a JSON object"}
	}
	if err := w.message(md, ""); err != nil {
		return err
	}
	// Anything after the document is malformed.
	if _, err := w.dec.ReadToken(); !errors.Is(err, io.EOF) {
		if err == nil {
			return &SyntaxError{Msg: "invalid JSON body: unexpected data after the JSON object"}
		}
		return w.syntax(err)
	}
	return nil
}

// syntax turns a jsontext error into a client message.
func (w *walker) syntax(err error) error {
	var se *jsontext.SyntacticError
	if errors.As(err, &se) {
		where := ""
		if p := string(se.JSONPointer); p != "" {
			where = " at " + pointerPath(p)
		}
		return &SyntaxError{Msg: fmt.Sprintf("invalid JSON body%s (byte %d): %s", where, se.ByteOffset, cleanErr(se.Err))}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return &SyntaxError{Msg: "invalid JSON body: unexpected end of input"}
	}
	return &SyntaxError{Msg: "invalid JSON body: " + cleanErr(err)}
}

func cleanErr(err error) string {
	if err == nil {
		return "malformed"
	}
	return strings.TrimPrefix(err.Error(), "jsontext: ")
}

// pointerPath turns a JSON pointer (/a/0/b) into the path style of the
// other messages (a[0].b).
func pointerPath(p string) string {
	var b strings.Builder
	for _, seg := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		seg = strings.ReplaceAll(strings.ReplaceAll(seg, "~1", "/"), "~0", "~")
		if _, err := strconv.Atoi(seg); err == nil && b.Len() > 0 {
			b.WriteString("[" + seg + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(seg)
	}
	return b.String()
}

func (w *walker) read() (jsontext.Token, error) {
	tok, err := w.dec.ReadToken()
	if err != nil {
		return tok, w.syntax(err)
	}
	return tok, nil
}

// copyToken reads one token and writes it when re-encoding.
func (w *walker) copyToken() (jsontext.Token, error) {
	tok, err := w.read()
	if err != nil {
		return tok, err
	}
	if w.enc != nil {
		if err := w.enc.WriteToken(tok); err != nil {
			return tok, w.syntax(err)
		}
	}
	return tok, nil
}

// copyValue copies one whole value unchecked (well-known types and values
// of kinds protojson checks itself).
func (w *walker) copyValue() error {
	v, err := w.dec.ReadValue()
	if err != nil {
		return w.syntax(err)
	}
	if w.enc != nil {
		if err := w.enc.WriteValue(v); err != nil {
			return w.syntax(err)
		}
	}
	return nil
}

func (w *walker) problem(path, format string, args ...any) {
	if len(w.problems) < MaxReported {
		w.problems = append(w.problems, path+": "+fmt.Sprintf(format, args...))
	}
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// message walks an object of message md at path. Recursion follows the
// schema, whose messages do not nest themselves; values of unknown fields
// are skipped by the decoder, which bounds their depth.
func (w *walker) message(md protoreflect.MessageDescriptor, path string) error {
	if _, err := w.copyToken(); err != nil { // '{'
		return err
	}
	aliases := w.opts.Aliases[md.FullName()]
	seen := map[protoreflect.Name]string{}
	for w.dec.PeekKind() != '}' {
		nameTok, err := w.read()
		if err != nil {
			return err
		}
		name := nameTok.String()
		fd := lookup(md, name)
		if fd == nil {
			if real, ok := aliases[name]; ok {
				fd = md.Fields().ByName(real)
				w.rewrite = true
			}
		}
		if fd == nil {
			w.addUnknown(join(path, name))
			w.rewrite = true
			if err := w.dec.SkipValue(); err != nil {
				return w.syntax(err)
			}
			continue
		}
		if prev, dup := seen[fd.Name()]; dup {
			w.problem(join(path, name), "give either %q or %q, not both", prev, name)
		}
		seen[fd.Name()] = name
		if w.enc != nil {
			// Aliases are written under the field's own name.
			if err := w.enc.WriteToken(jsontext.String(string(fd.Name()))); err != nil {
				return w.syntax(err)
			}
		}
		if err := w.field(fd, join(path, name)); err != nil {
			return err
		}
	}
	_, err := w.copyToken() // '}'
	return err
}

func (w *walker) addUnknown(path string) {
	if len(w.unknown) < MaxReported {
		w.unknown = append(w.unknown, path)
		return
	}
	w.extra++
}

// lookup finds a field by its JSON name or its proto name, as protojson does.
func lookup(md protoreflect.MessageDescriptor, name string) protoreflect.FieldDescriptor {
	if fd := md.Fields().ByJSONName(name); fd != nil {
		return fd
	}
	return md.Fields().ByName(protoreflect.Name(name))
}

// field walks the value of fd at path.
func (w *walker) field(fd protoreflect.FieldDescriptor, path string) error {
	if w.dec.PeekKind() == 'n' { // null: the field's default, for every kind
		_, err := w.copyToken()
		return err
	}
	switch {
	case fd.IsMap():
		return w.mapValue(fd, path)
	case fd.IsList():
		if w.dec.PeekKind() != '[' {
			w.problem(path, "must be a list")
			return w.copyValue()
		}
		if _, err := w.copyToken(); err != nil {
			return err
		}
		for i := 0; w.dec.PeekKind() != ']'; i++ {
			if err := w.single(fd, fmt.Sprintf("%s[%d]", path, i), false); err != nil {
				return err
			}
		}
		_, err := w.copyToken()
		return err
	default:
		return w.single(fd, path, false)
	}
}

func (w *walker) mapValue(fd protoreflect.FieldDescriptor, path string) error {
	if w.dec.PeekKind() != '{' {
		w.problem(path, "must be an object")
		return w.copyValue()
	}
	if _, err := w.copyToken(); err != nil {
		return err
	}
	val := fd.MapValue()
	for w.dec.PeekKind() != '}' {
		keyTok, err := w.copyToken() // protojson checks the key's syntax
		if err != nil {
			return err
		}
		key := keyTok.String()
		stringify := w.opts.StringifyMapScalars && val.Kind() == protoreflect.StringKind
		if err := w.single(val, fmt.Sprintf("%s[%q]", path, key), stringify); err != nil {
			return err
		}
	}
	_, err := w.copyToken()
	return err
}

// single walks one (non-repeated) value of fd's kind.
func (w *walker) single(fd protoreflect.FieldDescriptor, path string, stringify bool) error {
	kind := w.dec.PeekKind()
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		md := fd.Message()
		if strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
			return w.copyValue() // well-known types have their own JSON forms
		}
		if kind == 'n' {
			_, err := w.copyToken()
			return err
		}
		if kind != '{' {
			w.problem(path, "must be an object")
			return w.copyValue()
		}
		return w.message(md, path)
	case protoreflect.EnumKind:
		return w.enum(fd.Enum(), path)
	case protoreflect.StringKind, protoreflect.BytesKind:
		if kind != '"' && kind != 'n' {
			if stringify && (kind == '0' || kind == 't' || kind == 'f') {
				tok, err := w.read()
				if err != nil {
					return err
				}
				w.rewrite = true
				if w.enc != nil {
					if err := w.enc.WriteToken(jsontext.String(tok.String())); err != nil {
						return w.syntax(err)
					}
				}
				return nil
			}
			w.problem(path, "must be a string")
		}
		return w.copyValue()
	case protoreflect.BoolKind:
		if kind != 't' && kind != 'f' && kind != 'n' {
			w.problem(path, "must be true or false")
		}
		return w.copyValue()
	default: // numbers; protojson also takes them quoted ("1", "NaN")
		if kind != '0' && kind != '"' && kind != 'n' {
			w.problem(path, "must be a number")
		}
		return w.copyValue()
	}
}

// enum checks an enum value: a defined name, or a defined number.
func (w *walker) enum(ed protoreflect.EnumDescriptor, path string) error {
	if ed.FullName() == "google.protobuf.NullValue" {
		return w.copyValue()
	}
	tok, err := w.copyToken()
	if err != nil {
		return err
	}
	switch tok.Kind() {
	case '"':
		if ed.Values().ByName(protoreflect.Name(tok.String())) == nil {
			w.problem(path, "unknown value %q (one of %s)", tok.String(), enumNames(ed))
		}
	case '0':
		n, err := tok.Int()
		if err != nil || n != int64(int32(n)) || ed.Values().ByNumber(protoreflect.EnumNumber(n)) == nil {
			w.problem(path, "unknown value %s (one of %s)", tok.String(), enumNames(ed))
		}
	case 'n':
	case '{', '[':
		w.problem(path, "must be one of %s", enumNames(ed))
		// Skip the rest of the composite value the token opened.
		for depth := 1; depth > 0; {
			t, err := w.copyToken()
			if err != nil {
				return err
			}
			switch t.Kind() {
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
		}
	default:
		w.problem(path, "must be one of %s", enumNames(ed))
	}
	return nil
}

// enumNames lists an enum's names in number order, for messages.
func enumNames(ed protoreflect.EnumDescriptor) string {
	vals := ed.Values()
	type nv struct {
		n    protoreflect.EnumNumber
		name string
	}
	all := make([]nv, vals.Len())
	for i := range all {
		all[i] = nv{vals.Get(i).Number(), string(vals.Get(i).Name())}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].n < all[j].n })
	names := make([]string, len(all))
	for i, v := range all {
		names[i] = v.name
	}
	return strings.Join(names, ", ")
}
