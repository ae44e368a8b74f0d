// Package namepattern is the one meaning of PM's name patterns
// (?name_pattern=, ?filter=): the pattern matches a substring of a name and
// '*' matches any run of characters. The Postgres store translates the same
// rule into LIKE.
package namepattern

import "strings"

// Matcher returns a matcher for pattern. Because the match is unanchored at
// both ends, finding the '*'-separated parts in order, each at its leftmost
// place after the previous one, is exact.
func Matcher(pattern string) func(string) bool {
	parts := strings.Split(pattern, "*")
	return func(name string) bool {
		for _, part := range parts {
			i := strings.Index(name, part)
			if i < 0 {
				return false
			}
			name = name[i+len(part):]
		}
		return true
	}
}
