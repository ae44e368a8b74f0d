{{/* Names, labels and the checks every template relies on. */}}

{{- define "oaas-pm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "oaas-pm.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "oaas-pm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selects PM's server pods only, never the migration Job's. */}}
{{- define "oaas-pm.selectorLabels" -}}
{{ include "oaas-pm.instanceLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "oaas-pm.instanceLabels" -}}
app.kubernetes.io/name: {{ include "oaas-pm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "oaas-pm.labels" -}}
helm.sh/chart: {{ include "oaas-pm.chart" . }}
{{ include "oaas-pm.instanceLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: oaas
{{- end }}

{{- define "oaas-pm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "oaas-pm.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "oaas-pm.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* postgres is true when PM uses PostgreSQL. */}}
{{- define "oaas-pm.postgres" -}}
{{- if eq .Values.storage.type "postgres" }}true{{ end }}
{{- end }}

{{/* migrationJob is true when the hook Job migrates instead of the pods. */}}
{{- define "oaas-pm.migrationJob" -}}
{{- if and (include "oaas-pm.postgres" .) .Values.migrations.job.enabled }}true{{ end }}
{{- end }}

{{/* The Secret and key that hold DATABASE_URL. */}}
{{- define "oaas-pm.databaseSecretName" -}}
{{- default (printf "%s-db" (include "oaas-pm.fullname" .)) .Values.database.existingSecret }}
{{- end }}
{{- define "oaas-pm.databaseSecretKey" -}}
{{- if .Values.database.existingSecret }}{{ .Values.database.existingSecretKey }}{{ else }}DATABASE_URL{{ end }}
{{- end }}

{{/* tokensFile is true when a tokens file is mounted. */}}
{{- define "oaas-pm.tokensFile" -}}
{{- if and (not .Values.auth.disabled) .Values.auth.tokensFile.enabled }}true{{ end }}
{{- end }}

{{/* chartTokens is true when the chart makes the tokens Secret. */}}
{{- define "oaas-pm.chartTokens" -}}
{{- if and (include "oaas-pm.tokensFile" .) (not .Values.auth.tokensFile.existingSecret) }}true{{ end }}
{{- end }}

{{/* generatedAdmin is true when the chart makes an admin token. */}}
{{- define "oaas-pm.generatedAdmin" -}}
{{- $t := .Values.auth.tokensFile }}
{{- if and (include "oaas-pm.chartTokens" .) $t.generateAdminToken (not $t.tokens) (not $t.clients) }}true{{ end }}
{{- end }}

{{- define "oaas-pm.authSecretName" -}}
{{- default (printf "%s-auth" (include "oaas-pm.fullname" .)) .Values.auth.tokensFile.existingSecret }}
{{- end }}
{{- define "oaas-pm.authSecretKey" -}}
{{- if .Values.auth.tokensFile.existingSecret }}{{ .Values.auth.tokensFile.existingSecretKey }}{{ else }}tokens.yaml{{ end }}
{{- end }}

{{- define "oaas-pm.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "oaas-pm.fullname" .)) .Values.tls.existingSecret }}
{{- end }}

{{/* scheme of the API port, for probes and the ServiceMonitor's hints. */}}
{{- define "oaas-pm.scheme" -}}
{{- if .Values.tls.enabled }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/*
validate stops the render with a message naming the value at fault when a
combination would give a PM that refuses to start or a cluster that loses
data. Every template includes it, so `helm template` fails as early as
`helm install`.
*/}}
{{- define "oaas-pm.validate" -}}
{{- $v := .Values }}
{{- if not (has $v.storage.type (list "memory" "postgres")) }}
{{- fail (printf "storage.type: %q is not supported (memory or postgres)" $v.storage.type) }}
{{- end }}
{{- if and (eq $v.storage.type "memory") (gt (int $v.replicaCount) 1) }}
{{- fail "replicaCount: the memory store keeps one registry per pod; use 1, or storage.type=postgres" }}
{{- end }}
{{- if and (include "oaas-pm.postgres" .) (not $v.database.url) (not $v.database.existingSecret) }}
{{- fail "database: storage.type=postgres needs database.url or database.existingSecret" }}
{{- end }}
{{- if and $v.database.url $v.database.existingSecret }}
{{- fail "database: set database.url or database.existingSecret, not both" }}
{{- end }}
{{- if and (not $v.auth.disabled) (not $v.auth.tokensFile.enabled) (not $v.auth.oidc.issuer) }}
{{- fail "auth: PM refuses to listen beyond loopback without authentication; enable auth.tokensFile or set auth.oidc.issuer, or set auth.disabled=true (AUTH_MODE=none)" }}
{{- end }}
{{- if and $v.auth.disabled $v.auth.oidc.issuer }}
{{- fail "auth: auth.disabled=true turns authentication off; unset auth.oidc.issuer" }}
{{- end }}
{{- if $v.auth.oidc.issuer }}
{{- if not $v.auth.oidc.audience }}{{ fail "auth.oidc.audience: required with auth.oidc.issuer" }}{{ end }}
{{- if eq (not $v.auth.oidc.jwksURL) (not $v.auth.oidc.jwksFile) }}{{ fail "auth.oidc: set exactly one of auth.oidc.jwksURL and auth.oidc.jwksFile" }}{{ end }}
{{- end }}
{{- if and (include "oaas-pm.chartTokens" .) (not $v.auth.tokensFile.tokens) (not $v.auth.tokensFile.clients) (not $v.auth.tokensFile.generateAdminToken) }}
{{- fail "auth.tokensFile: no tokens, no clients, no existingSecret and generateAdminToken=false would let nobody in" }}
{{- end }}
{{- range $v.auth.tokensFile.tokens }}
{{- if not (regexMatch "^[0-9a-f]{64}$" (toString .sha256)) }}
{{- fail (printf "auth.tokensFile.tokens: principal %q: sha256 must be 64 lowercase hex digits (the hash of the token, never the token)" (toString .principal)) }}
{{- end }}
{{- end }}
{{- if $v.tls.enabled }}
{{- if and (not $v.tls.existingSecret) (or (not $v.tls.cert) (not $v.tls.key)) }}
{{- fail "tls: tls.enabled needs tls.existingSecret, or tls.cert and tls.key" }}
{{- end }}
{{- if and $v.tls.clientCA (not $v.tls.existingSecret) (not $v.tls.ca) }}
{{- fail "tls.clientCA: needs tls.ca (or ca.crt in tls.existingSecret)" }}
{{- end }}
{{- if and $v.tls.clientCA (not (include "oaas-pm.tokensFile" .)) (not $v.auth.oidc.issuer) }}
{{- fail "tls.clientCA: client certificates map to principals in the tokens file (auth.tokensFile.clients); enable auth.tokensFile" }}
{{- end }}
{{- end }}
{{- if and $v.tls.clientCA (not $v.tls.enabled) }}
{{- fail "tls.clientCA: client certificates need tls.enabled" }}
{{- end }}
{{- $managed := list "SERVER_HOST" "SERVER_PORT" "METRICS_ENABLED" "METRICS_PORT" "STORAGE_TYPE" "DATABASE_URL" "DATABASE_AUTO_MIGRATE" "AUTH_MODE" "AUTH_TOKENS_FILE" "AUTH_METRICS_OPEN" "AUTH_REFLECTION_OPEN" "SERVER_TLS_CERT_FILE" "SERVER_TLS_KEY_FILE" "SERVER_TLS_CLIENT_CA_FILE" }}
{{- range $k, $_ := $v.config }}
{{- if or (has $k $managed) (hasPrefix "AUTH_OIDC_" $k) }}
{{- fail (printf "config.%s: the chart sets %s from its own values (see values.yaml); set it there" $k $k) }}
{{- end }}
{{- end }}
{{- if and $v.serviceMonitor.enabled (not $v.metrics.enabled) }}
{{- fail "serviceMonitor: needs metrics.enabled" }}
{{- end }}
{{- if and $v.serviceMonitor.enabled (not $v.auth.disabled) (not $v.auth.metricsOpen) (not $v.serviceMonitor.bearerTokenSecret) }}
{{- fail "serviceMonitor: PM closes /metrics when authentication is on; set auth.metricsOpen=true or serviceMonitor.bearerTokenSecret (a viewer token)" }}
{{- end }}
{{- end }}
