package fieldcheck

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Unknown returns the unknown fields of a decoded binary message, by path
// and field number (`package.metadata.#42`), in field order; at most
// MaxReported (+1 summary entry). Binary encodings carry numbers, not names.
func Unknown(m protoreflect.Message) []string {
	var out []string
	extra := 0
	add := func(p string) {
		if len(out) < MaxReported {
			out = append(out, p)
			return
		}
		extra++
	}
	walkMessages(m, "", func(m protoreflect.Message, path string) {
		raw := m.GetUnknown()
		for len(raw) > 0 {
			num, _, n := protowire.ConsumeField(raw)
			if n < 0 {
				add(join(path, "#?"))
				return
			}
			add(join(path, fmt.Sprintf("#%d", num)))
			raw = raw[n:]
		}
	})
	if extra > 0 {
		out = append(out, fmt.Sprintf("... and %d more", extra))
	}
	return out
}

// CheckEnums reports enum fields of a decoded message that hold numbers
// their enum does not define: proto3 enums are open on the wire, but PM only
// stores values it knows the meaning of.
func CheckEnums(m protoreflect.Message) error {
	var problems Problems
	bad := func(path string, fd protoreflect.FieldDescriptor, v protoreflect.EnumNumber) {
		if fd.Enum().Values().ByNumber(v) == nil && len(problems) < MaxReported {
			problems = append(problems, fmt.Sprintf("%s: unknown value %d (one of %s)", path, v, enumNames(fd.Enum())))
		}
	}
	walkMessages(m, "", func(m protoreflect.Message, path string) {
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			switch {
			case fd.IsMap():
				if fd.MapValue().Kind() == protoreflect.EnumKind {
					v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
						bad(fmt.Sprintf("%s[%q]", join(path, string(fd.Name())), k.String()), fd.MapValue(), mv.Enum())
						return true
					})
				}
			case fd.Kind() != protoreflect.EnumKind:
			case fd.IsList():
				for i := range v.List().Len() {
					bad(fmt.Sprintf("%s[%d]", join(path, string(fd.Name())), i), fd, v.List().Get(i).Enum())
				}
			default:
				bad(join(path, string(fd.Name())), fd, v.Enum())
			}
			return true
		})
	})
	if len(problems) > 0 {
		return problems
	}
	return nil
}

// walkMessages calls fn on m and on every message inside it, depth first,
// with its path.
func walkMessages(m protoreflect.Message, path string, fn func(protoreflect.Message, string)) {
	fn(m, path)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := join(path, string(fd.Name()))
		switch {
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					walkMessages(mv.Message(), fmt.Sprintf("%s[%q]", name, k.String()), fn)
					return true
				})
			}
		case fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind:
		case fd.IsList():
			for i := range v.List().Len() {
				walkMessages(v.List().Get(i).Message(), fmt.Sprintf("%s[%d]", name, i), fn)
			}
		default:
			walkMessages(v.Message(), name, fn)
		}
		return true
	})
}
