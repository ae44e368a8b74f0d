package config

import (
	"fmt"
	"strings"
)

// Tracing is OpenTelemetry tracing, configured by the standard OTEL_*
// variables and off unless one of them asks for it. The exporter reads the
// rest (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _CERTIFICATE, ...) itself.
type Tracing struct {
	// Enabled: OTEL_TRACES_EXPORTER=otlp, or an OTLP endpoint is set
	// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
	// OTEL_SDK_DISABLED=true and OTEL_TRACES_EXPORTER=none turn it off.
	Enabled bool
	// Protocol is OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else
	// OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf" (the default) or "grpc".
	Protocol string
	// ServiceName is OTEL_SERVICE_NAME, default "oaas-pm".
	ServiceName string
}

func (r *reader) tracing(t *Tracing) {
	t.Protocol, t.ServiceName = "http/protobuf", "oaas-pm"
	exporter, _ := r.get("OTEL_TRACES_EXPORTER")
	_, endpoint := r.get("OTEL_EXPORTER_OTLP_ENDPOINT")
	_, tracesEndpoint := r.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	switch strings.ToLower(exporter) {
	case "", "otlp":
		t.Enabled = exporter != "" || endpoint || tracesEndpoint
	case "none":
	default:
		r.errs = append(r.errs, fmt.Errorf("OTEL_TRACES_EXPORTER: %q is not supported (otlp or none)", exporter))
	}
	disabled := false
	r.bool("OTEL_SDK_DISABLED", &disabled)
	if disabled {
		t.Enabled = false
	}
	r.str("OTEL_EXPORTER_OTLP_PROTOCOL", &t.Protocol)
	r.str("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", &t.Protocol)
	r.str("OTEL_SERVICE_NAME", &t.ServiceName)
	if t.Protocol != "http/protobuf" && t.Protocol != "grpc" {
		r.errs = append(r.errs, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL: %q is not supported (http/protobuf or grpc)", t.Protocol))
	}
}
