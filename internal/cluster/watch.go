package cluster

import "slices"

// OnHealthChange makes fn hear of every change of a cluster's cached
// health (status, availability, nodes, CRM version or message; not the
// last-seen time, which every answer moves), and of each cluster's first
// check. fn runs on the checking goroutine and must not block.
func (m *Manager) OnHealthChange(fn func(Health)) {
	if fn == nil {
		m.onHealth.Store(nil)
		return
	}
	m.onHealth.Store(&fn)
}

// announce tells the OnHealthChange listener about the health just stored
// for cluster name, if it differs from prev (had: there was one).
func (m *Manager) announce(name string, prev Health, had bool) {
	fn := m.onHealth.Load()
	if fn == nil {
		return
	}
	now, ok := m.LastHealth(name)
	if ok && (!had || !sameHealth(prev, now)) {
		(*fn)(now)
	}
}

func sameHealth(a, b Health) bool {
	return a.Status == b.Status && a.Message == b.Message && a.Source == b.Source &&
		slices.Equal(ptrs(a.NodeCount), ptrs(b.NodeCount)) && slices.Equal(ptrs(a.ReadyNodes), ptrs(b.ReadyNodes)) &&
		slices.Equal(ptrs(a.Availability), ptrs(b.Availability)) && slices.Equal(ptrs(a.CRMVersion), ptrs(b.CRMVersion))
}

// ptrs is p's value as a list of zero or one, for comparing optionals.
func ptrs[T comparable](p *T) []T {
	if p == nil {
		return nil
	}
	return []T{*p}
}
