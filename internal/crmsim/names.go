package crmsim

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
)

// maxLabel is the longest DNS-1123 label, hence the longest object name a
// field CRM can create from a unit id.
const maxLabel = 63

var dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// normalizeName mirrors how a field CRM turns an id into a Kubernetes object
// name: lowercase, anything outside [a-z0-9-] becomes '-', and leading or
// trailing '-' are trimmed.
func normalizeName(id string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(id) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	return strings.Trim(b.String(), "-")
}

// unitName normalises a unit id and rejects it, as a field CRM does, when the
// result cannot be a Kubernetes object name.
func unitName(id string) (string, error) {
	name := normalizeName(id)
	switch {
	case name == "":
		return "", fmt.Errorf("deployment unit id %q is empty once normalised to a Kubernetes name", id)
	case len(name) > maxLabel:
		return "", fmt.Errorf("deployment unit id %q normalises to %q, %d characters; a DNS-1123 label has at most %d",
			id, name, len(name), maxLabel)
	case !dns1123Label.MatchString(name):
		return "", fmt.Errorf("deployment unit id %q normalises to %q, which is not a DNS-1123 label", id, name)
	}
	return name, nil
}

// childName derives the name of an object owned by a unit. Like Kubernetes
// controllers, it keeps names within a label by cutting and appending a short
// hash, so two long function keys do not collide.
func childName(unit, suffix string) string {
	name := unit + "-" + normalizeName(suffix)
	name = strings.TrimRight(name, "-")
	if len(name) <= maxLabel {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	tag := hex.EncodeToString(sum[:4])
	return strings.TrimRight(name[:maxLabel-len(tag)-1], "-") + "-" + tag
}

// objectUID makes a stable UUID-shaped uid for a simulated object, so repeated
// status reads agree while a recreated object (new generation) gets a new uid,
// as in a real cluster.
func objectUID(env, kind, name string, generation uint64) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%s/%s/%d", env, kind, name, generation))
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x40 // version 4 layout, as Kubernetes uids are
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
