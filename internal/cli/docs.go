package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
)

// kind is what a document describes.
type kind string

const (
	kindPackage    kind = "package"
	kindDeployment kind = "deployment"
)

// document is one package or deployment read from a file.
type document struct {
	// source names where it came from: "pkg.yaml", "all.yaml (document 2)".
	source string
	kind   kind
	// name is the package's name or the deployment's key ("" if missing).
	name string
	// body is the JSON to send: the user's document without "kind", and
	// with YAML scalars in string maps made strings.
	body []byte
	// unknown lists the fields PM does not know, by path, as seen locally.
	unknown []string
	// msg is the document decoded as PM would (aliases renamed, unknown
	// fields dropped); nil when it cannot be (parseErr says why: PM will
	// then say it better).
	msg      proto.Message
	parseErr error
}

func (d *document) ref() string {
	if d.name == "" {
		return string(d.kind) + " in " + d.source
	}
	return string(d.kind) + "/" + d.name
}

// loadDocuments reads every document of the given files, directories
// (their *.yaml, *.yml and *.json files, in name order) and "-" (stdin).
func loadDocuments(paths []string, stdin io.Reader, recursive bool) ([]*document, error) {
	var docs []*document
	readStdin := false
	for _, p := range paths {
		if p == "-" {
			if readStdin {
				return nil, usageErr("-f - (stdin) given twice")
			}
			readStdin = true
			data, err := io.ReadAll(stdin)
			if err != nil {
				return nil, failf(ExitError, "reading stdin: %v", err)
			}
			ds, err := parseFile("stdin", data)
			if err != nil {
				return nil, err
			}
			docs = append(docs, ds...)
			continue
		}
		files, err := expand(p, recursive)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, failf(ExitError, "reading %s: %v", f, unwrapPath(err))
			}
			ds, err := parseFile(f, data)
			if err != nil {
				return nil, err
			}
			docs = append(docs, ds...)
		}
	}
	if len(docs) == 0 {
		return nil, failf(ExitError, "no package or deployment found in %s", strings.Join(paths, ", "))
	}
	return docs, nil
}

func isManifest(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// expand lists the manifest files p names.
func expand(p string, recursive bool) ([]string, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, failf(ExitError, "%s: %v", p, unwrapPath(err))
	}
	if !st.IsDir() {
		return []string{p}, nil
	}
	var files []string
	err = filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != p && !recursive {
				return filepath.SkipDir
			}
			return nil
		}
		if isManifest(path) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return nil, failf(ExitError, "reading %s: %v", p, unwrapPath(err))
	}
	slices.Sort(files)
	if len(files) == 0 {
		return nil, failf(ExitError, "%s holds no *.yaml, *.yml or *.json file", p)
	}
	return files, nil
}

// parseFile splits a file into documents: a JSON value (or a stream of
// them), or YAML documents separated by "---". A top-level list holds
// several documents (what "pmctl get -o json|yaml" prints).
func parseFile(name string, data []byte) ([]*document, error) {
	trimmed := bytes.TrimSpace(data)
	var values []any
	isYAML := true
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		isYAML = false
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.UseNumber()
		for {
			var v any
			err := dec.Decode(&v)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, failf(ExitError, "%s: invalid JSON: %v", name, cleanJSONError(err))
			}
			values = append(values, v)
		}
	} else {
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for i := 1; ; i++ {
			chunk, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, failf(ExitError, "%s: reading YAML: %v", name, err)
			}
			j, err := yaml.YAMLToJSON(chunk)
			if err != nil {
				return nil, failf(ExitError, "%s (document %d): invalid YAML: %s", name, i, cleanYAMLError(err))
			}
			if string(bytes.TrimSpace(j)) == "null" {
				continue // empty or comments only
			}
			dec := json.NewDecoder(bytes.NewReader(j))
			dec.UseNumber()
			var v any
			if err := dec.Decode(&v); err != nil {
				return nil, failf(ExitError, "%s (document %d): %v", name, i, err)
			}
			values = append(values, v)
		}
	}
	var flat []any
	for _, v := range values {
		if list, ok := v.([]any); ok {
			flat = append(flat, list...)
		} else {
			flat = append(flat, v)
		}
	}
	docs := make([]*document, 0, len(flat))
	for i, v := range flat {
		src := name
		if len(flat) > 1 {
			src = fmt.Sprintf("%s (document %d)", name, i+1)
		}
		d, err := newDocument(src, v, isYAML)
		if err != nil {
			return nil, err
		}
		docs = append(docs, d)
	}
	return docs, nil
}

// newDocument classifies v and prepares it for PM.
func newDocument(src string, v any, isYAML bool) (*document, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, failf(ExitError, "%s: a document must be an object (a package or a deployment)", src)
	}
	k, err := classify(obj)
	if err != nil {
		return nil, failf(ExitError, "%s: %v", src, err)
	}
	delete(obj, "kind")
	d := &document{source: src, kind: k}
	var msg proto.Message = &pmv1.OPackage{}
	nameField := "name"
	if k == kindDeployment {
		msg, nameField = &pmv1.OClassDeployment{}, "key"
	}
	if s, ok := obj[nameField].(string); ok {
		d.name = s
	}
	w := walker{yaml: isYAML}
	clean := w.message(msg.ProtoReflect().Descriptor(), obj, "")
	d.unknown = w.unknown
	if d.body, err = json.Marshal(obj); err != nil {
		return nil, failf(ExitError, "%s: %v", src, err)
	}
	cj, err := json.Marshal(clean)
	if err != nil {
		return nil, failf(ExitError, "%s: %v", src, err)
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(cj, msg); err != nil {
		d.parseErr = errors.New(cleanProtoJSONError(err))
	} else {
		d.msg = msg
	}
	return d, nil
}

// classify tells a package from a deployment: an explicit kind, else the
// fields only one of them has.
func classify(obj map[string]any) (kind, error) {
	if kv, ok := obj["kind"]; ok {
		s, _ := kv.(string)
		switch strings.ToLower(s) {
		case "package", "opackage":
			return kindPackage, nil
		case "deployment", "oclassdeployment", "classdeployment":
			return kindDeployment, nil
		}
		return "", fmt.Errorf("kind %v is not Package or Deployment", kv)
	}
	has := func(names ...string) bool {
		for _, n := range names {
			if _, ok := obj[n]; ok {
				return true
			}
		}
		return false
	}
	isDep := has("package_name", "packageName") && has("class_key", "classKey")
	// A deployment may override functions too; only a package has classes
	// or a version.
	isPkg := has("classes", "version") || (has("functions") && !isDep)
	switch {
	case isDep && !isPkg:
		return kindDeployment, nil
	case isPkg && !isDep:
		return kindPackage, nil
	case isDep && isPkg:
		return "", errors.New("it has fields of both a package and a deployment; add kind: Package or kind: Deployment")
	}
	// Neither shape: a package is named by "name", a deployment by "key".
	switch named, keyed := has("name"), has("key"); {
	case named && !keyed:
		return kindPackage, nil
	case keyed && !named:
		return kindDeployment, nil
	}
	return "", errors.New("cannot tell a package (name, classes, functions, version) from a deployment (key, package_name, class_key); add kind: Package or kind: Deployment")
}

// aliases are older field names PM accepts and renames (rest-json-model.md:
// target_clusters is the older name of target_envs). pmctl needs them only
// to read a document as PM will; what it sends keeps the user's names.
var aliases = map[protoreflect.FullName]map[string]protoreflect.Name{
	"oaas.pm.v1.OClassDeployment": {"target_clusters": "target_envs", "targetClusters": "target_envs"},
}

// walker reads a decoded JSON document against a message's descriptor.
type walker struct {
	// yaml: the document was YAML, whose hand-written `PORT: 80` in a
	// map<string,string> means "80" (PM's REST face reads YAML bodies so).
	yaml    bool
	unknown []string
}

// message walks obj as a JSON message md. It makes YAML scalars in string
// maps strings in place, records unknown fields, and returns a copy without
// them and with aliases renamed, for decoding as PM will.
func (w *walker) message(md protoreflect.MessageDescriptor, v any, path string) any {
	obj, ok := v.(map[string]any)
	if !ok || strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		return v
	}
	names := make([]string, 0, len(obj))
	for n := range obj {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make(map[string]any, len(obj))
	for _, n := range names {
		fd := lookupField(md, n)
		p := n
		if path != "" {
			p = path + "." + n
		}
		if fd == nil {
			w.unknown = append(w.unknown, p)
			continue
		}
		out[string(fd.Name())] = w.value(fd, obj[n], p)
	}
	return out
}

func lookupField(md protoreflect.MessageDescriptor, name string) protoreflect.FieldDescriptor {
	fields := md.Fields()
	if fd := fields.ByJSONName(name); fd != nil {
		return fd
	}
	if fd := fields.ByName(protoreflect.Name(name)); fd != nil {
		return fd
	}
	if to, ok := aliases[md.FullName()][name]; ok {
		return fields.ByName(to)
	}
	return nil
}

func (w *walker) value(fd protoreflect.FieldDescriptor, v any, path string) any {
	switch {
	case fd.IsMap():
		m, ok := v.(map[string]any)
		if !ok {
			return v
		}
		val := fd.MapValue()
		out := make(map[string]any, len(m))
		for k, x := range m {
			switch {
			case val.Kind() == protoreflect.StringKind && w.yaml:
				switch s := x.(type) {
				case json.Number:
					m[k] = s.String()
				case bool:
					m[k] = strconv.FormatBool(s)
				}
				out[k] = m[k]
			case val.Kind() == protoreflect.MessageKind:
				out[k] = w.message(val.Message(), x, path+"."+k)
			default:
				out[k] = x
			}
		}
		return out
	case fd.IsList():
		list, ok := v.([]any)
		if !ok || fd.Kind() != protoreflect.MessageKind {
			return v
		}
		out := make([]any, len(list))
		for i, x := range list {
			out[i] = w.message(fd.Message(), x, fmt.Sprintf("%s[%d]", path, i))
		}
		return out
	case fd.Kind() == protoreflect.MessageKind:
		return w.message(fd.Message(), v, path)
	}
	return v
}

// cleanJSONError drops encoding/json's Go type names from an error.
func cleanJSONError(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s (at byte %d)", se.Error(), se.Offset)
	}
	return err.Error()
}

// cleanYAMLError drops the converter's prefixes.
func cleanYAMLError(err error) string {
	s := err.Error()
	for _, p := range []string{"error converting YAML to JSON: ", "error unmarshaling JSON: ", "yaml: "} {
		s = strings.TrimPrefix(s, p)
	}
	return s
}

// cleanProtoJSONError drops protojson's "proto: (line 1:23): " prefix.
func cleanProtoJSONError(err error) string {
	s := strings.TrimPrefix(err.Error(), "proto:")
	s = strings.TrimSpace(strings.ReplaceAll(s, "\u00a0", " "))
	if strings.HasPrefix(s, "(line ") {
		if i := strings.Index(s, "): "); i >= 0 {
			s = s[i+3:]
		}
	}
	return s
}
