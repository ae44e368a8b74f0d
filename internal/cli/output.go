package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"
)

// protoJSON renders m in PM's REST JSON model: proto field names
// (snake_case), enum names, RFC 3339 times.
func protoJSON(m proto.Message) (json.RawMessage, error) {
	return protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
}

// protoList renders messages as one JSON array.
func protoList[T proto.Message](items []T) (json.RawMessage, error) {
	out := make([]json.RawMessage, len(items))
	for i, m := range items {
		b, err := protoJSON(m)
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return json.Marshal(out)
}

// printValue writes v (a Go value or json.RawMessage) as --output json or
// yaml.
func (a *app) printValue(v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return failf(ExitError, "encoding output: %v", err)
	}
	return writeFormatted(a.streams.Out, a.output, raw)
}

// printProto writes one message as --output json or yaml.
func (a *app) printProto(m proto.Message) error {
	raw, err := protoJSON(m)
	if err != nil {
		return failf(ExitError, "encoding output: %v", err)
	}
	return writeFormatted(a.streams.Out, a.output, raw)
}

// printProtos writes messages as a JSON array or YAML list: the shape the
// REST API answers lists with, and one pmctl apply accepts back.
func printProtos[T proto.Message](a *app, items []T) error {
	raw, err := protoList(items)
	if err != nil {
		return failf(ExitError, "encoding output: %v", err)
	}
	return writeFormatted(a.streams.Out, a.output, raw)
}

func writeFormatted(w io.Writer, format string, raw []byte) error {
	var out []byte
	switch format {
	case "yaml":
		y, err := yaml.JSONToYAML(raw)
		if err != nil {
			return failf(ExitError, "encoding output: %v", err)
		}
		out = y
	default:
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			return failf(ExitError, "encoding output: %v", err)
		}
		buf.WriteByte('\n')
		out = buf.Bytes()
	}
	_, err := w.Write(out)
	return err
}

// table writes aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, headers ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}
	t.row(headers...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		// A tab or newline inside a cell would break the columns.
		cells[i] = strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(c)
	}
	_, _ = fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// dash shows an empty value as "-".
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// age is how long ago ts was, as kubectl shows it ("45s", "3m", "2h", "5d").
func age(ts *timestamppb.Timestamp) string { return ageAt(time.Now(), ts) }

func ageAt(now time.Time, ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	d := now.Sub(ts.AsTime())
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Hours())) + "h"
	}
	return strconv.Itoa(int(d.Hours()/24)) + "d"
}

// timeText is a timestamp for describe: RFC 3339 and its age.
func timeText(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().Local().Format(time.RFC3339) + " (" + age(ts) + " ago)"
}

// ratio formats an availability such as 0.999.
func ratio(f float64) string {
	if f == 0 {
		return "-"
	}
	return strconv.FormatFloat(f, 'g', 6, 64)
}

// kv writes describe's "Key:  value" lines, aligned.
type kv struct{ tw *tabwriter.Writer }

func newKV(w io.Writer) *kv { return &kv{tw: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)} }

func (k *kv) add(key, value string) { _, _ = fmt.Fprintf(k.tw, "%s:\t%s\n", key, value) }

func (k *kv) flush() error { return k.tw.Flush() }

// word is an enum value as a lower-case word without its type's prefix
// (ROLLOUT_STATE_DEPLOYED → "deployed"); "-" for the unspecified zero.
func word(e protoreflect.Enum) string {
	if e.Number() == 0 {
		return "-"
	}
	name := string(e.Descriptor().Values().ByNumber(e.Number()).Name())
	prefix := strings.ToUpper(strcase(string(e.Descriptor().Name()))) + "_"
	return strings.ToLower(strings.TrimPrefix(name, prefix))
}

// strcase turns CamelCase into SNAKE_CASE words joined by '_'.
func strcase(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return b.String()
}
