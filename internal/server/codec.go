package server

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// restCodec renders REST JSON as rest-json-model.md wants it: snake_case
// names, defaults present, unknown input fields rejected.
func restCodec(res vanguard.TypeResolver) vanguard.Codec {
	return restJSON{&vanguard.JSONCodec{
		MarshalOptions:   protojson.MarshalOptions{Resolver: res, UseProtoNames: true, EmitDefaultValues: true},
		UnmarshalOptions: protojson.UnmarshalOptions{Resolver: res, DiscardUnknown: false},
	}}
}

// restJSON makes every decoding failure an InvalidArgument (400) with a
// message in the client's terms; vanguard would report a plain error as an
// internal one (500).
type restJSON struct {
	*vanguard.JSONCodec
}

var _ vanguard.RESTCodec = restJSON{}

// Unmarshal implements vanguard.Codec.
func (c restJSON) Unmarshal(data []byte, msg proto.Message) error {
	return badBody(c.JSONCodec.Unmarshal(data, msg))
}

// MarshalAppendField implements vanguard.RESTCodec. A list of messages (the
// bare array of every list route) is written element by element: vanguard's
// own version marshals the whole response and re-parses it with
// encoding/json to cut the field out, a seventh of a list's cost.
func (c restJSON) MarshalAppendField(base []byte, msg proto.Message, field protoreflect.FieldDescriptor) ([]byte, error) {
	if !field.IsList() || field.Message() == nil {
		return c.JSONCodec.MarshalAppendField(base, msg, field)
	}
	list := msg.ProtoReflect().Get(field).List()
	base = append(base, '[')
	for i := range list.Len() {
		if i > 0 {
			base = append(base, ',')
		}
		var err error
		if base, err = c.MarshalOptions.MarshalAppend(base, list.Get(i).Message().Interface()); err != nil {
			return nil, err
		}
	}
	return append(base, ']'), nil
}

// UnmarshalField implements vanguard.RESTCodec.
func (c restJSON) UnmarshalField(data []byte, msg proto.Message, field protoreflect.FieldDescriptor) error {
	return badBody(c.JSONCodec.UnmarshalField(data, msg, field))
}

var (
	// protoPrefix is protojson's position prefix, which means nothing to a
	// REST client ("proto: (line 1:2): ").
	protoPrefix = regexp.MustCompile(`proto:\s*(\(line \d+:\d+\):\s*)?`)
	// fieldName finds the field a protojson message names; protojson uses
	// the camelCase JSON name even when the input was snake_case.
	fieldName = regexp.MustCompile(`field ([a-z][A-Za-z0-9]*)`)
)

func badBody(err error) error {
	if err == nil {
		return nil
	}
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("invalid JSON body: %s", cleanDecodeError(err.Error())))
}

// cleanDecodeError strips protojson's prefix and names fields in snake_case.
func cleanDecodeError(msg string) string {
	msg = protoPrefix.ReplaceAllString(msg, "")
	return fieldName.ReplaceAllStringFunc(msg, func(m string) string {
		return "field " + snake(strings.TrimPrefix(m, "field "))
	})
}

func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}
