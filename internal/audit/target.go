package audit

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// targetFields are the request fields that name the object of a call, in
// order of preference; holders are the message fields whose own such field
// names it when the request has none at its top (CreatePackageRequest's
// package.name, CreateDeploymentRequest's deployment.key).
var (
	targetFields = []protoreflect.Name{"name", "key", "id", "deployment_key"}
	holders      = []protoreflect.Name{"package", "deployment"}
)

// Target returns the identity of the object a request names: the first
// non-empty string field among name, key, id and deployment_key; else that
// of its package or deployment message; else that of any other message
// field, in field order. "" when the request names nothing. New RPCs that
// follow the API's naming are covered without a change here.
func Target(m proto.Message) string {
	if m == nil {
		return ""
	}
	rm := m.ProtoReflect()
	if !rm.IsValid() {
		return ""
	}
	if s := ownTarget(rm); s != "" {
		return s
	}
	fields := rm.Descriptor().Fields()
	for _, n := range holders {
		if s := heldTarget(rm, fields.ByName(n)); s != "" {
			return s
		}
	}
	for i := range fields.Len() {
		if s := heldTarget(rm, fields.Get(i)); s != "" {
			return s
		}
	}
	return ""
}

func ownTarget(m protoreflect.Message) string {
	fields := m.Descriptor().Fields()
	for _, n := range targetFields {
		fd := fields.ByName(n)
		if fd == nil || fd.Kind() != protoreflect.StringKind || fd.Cardinality() == protoreflect.Repeated {
			continue
		}
		if s := m.Get(fd).String(); s != "" {
			return s
		}
	}
	return ""
}

// heldTarget is the target of the message in field fd of m, if fd is a
// singular message field that is set.
func heldTarget(m protoreflect.Message, fd protoreflect.FieldDescriptor) string {
	if fd == nil || fd.Message() == nil || fd.Cardinality() == protoreflect.Repeated || !m.Has(fd) {
		return ""
	}
	return ownTarget(m.Get(fd).Message())
}

// targetOfVars picks the target among a REST path's field values.
func targetOfVars(vars map[string]string) string {
	for _, n := range targetFields {
		if v := vars[string(n)]; v != "" {
			return v
		}
	}
	return ""
}

// idempotencyField is the request's idempotency_key field, if it has one.
func idempotencyField(m proto.Message) string {
	rm := m.ProtoReflect()
	if !rm.IsValid() {
		return ""
	}
	fd := rm.Descriptor().Fields().ByName("idempotency_key")
	if fd == nil || fd.Kind() != protoreflect.StringKind || fd.Cardinality() == protoreflect.Repeated {
		return ""
	}
	return rm.Get(fd).String()
}
