{{/*
The four services: values key -> binary, gRPC health/service name, OTEL service name.
Every per-service template ranges over this map and skips services with enabled=false.
*/}}
{{- define "eventflow.serviceCatalog" -}}
publisher:
  binary: eventflow-publisher
  grpcService: eventflow.v1.PublisherService
subscriber:
  binary: eventflow-subscriber
  grpcService: eventflow.v1.SubscriberService
admin:
  binary: eventflow-admin
  grpcService: eventflow.v1.AdminService
dlq:
  binary: eventflow-dlq
  grpcService: eventflow.v1.DeadLetterService
{{- end }}

{{- define "eventflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, shortened to leave room for "-subscriber" etc. in resource names. */}}
{{- define "eventflow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "eventflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels shared by every resource. */}}
{{- define "eventflow.labels" -}}
helm.sh/chart: {{ include "eventflow.chart" . }}
app.kubernetes.io/name: {{ include "eventflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: eventflow
{{- end }}

{{/* Selector labels of one component. Call with (dict "root" $ "component" "publisher"). */}}
{{- define "eventflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eventflow.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component. Call with (dict "root" $ "component" "publisher"). */}}
{{- define "eventflow.componentLabels" -}}
{{ include "eventflow.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "eventflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "eventflow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "eventflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Name of the bundled Redis StatefulSet and Service. */}}
{{- define "eventflow.redisName" -}}
{{- printf "%s-redis" (include "eventflow.fullname" .) }}
{{- end }}

{{/* The Secret holding the Redis password ("" when there is no password). */}}
{{- define "eventflow.redisPasswordSecret" -}}
{{- if .Values.redis.existingSecret }}
{{- .Values.redis.existingSecret }}
{{- else if .Values.redis.password }}
{{- printf "%s-redis-auth" (include "eventflow.fullname" .) }}
{{- end }}
{{- end }}

{{- define "eventflow.redisPasswordKey" -}}
{{- if .Values.redis.existingSecret }}
{{- .Values.redis.existingSecretPasswordKey }}
{{- else }}
{{- print "redis-password" }}
{{- end }}
{{- end }}

{{/* Redis URL without the password: redis.url, or the bundled Redis Service. */}}
{{- define "eventflow.redisBaseUrl" -}}
{{- if .Values.redis.bundled.enabled }}
{{- printf "redis://%s.%s.svc:6379/0" (include "eventflow.redisName" .) .Release.Namespace }}
{{- else }}
{{- .Values.redis.url }}
{{- end }}
{{- end }}

{{/*
EVENTFLOW_REDIS_URL for the service containers:
- the whole URL from a Secret (redis.existingSecret + redis.existingSecretUrlKey), or
- the base URL with the password from a Secret spliced in through Kubernetes' $(VAR) expansion, or
- the base URL as is.
*/}}
{{- define "eventflow.redisEnv" -}}
{{- $r := .Values.redis }}
{{- if and $r.existingSecret $r.existingSecretUrlKey }}
- name: EVENTFLOW_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $r.existingSecret }}
      key: {{ $r.existingSecretUrlKey }}
{{- else }}
{{- $url := include "eventflow.redisBaseUrl" . }}
{{- $secret := include "eventflow.redisPasswordSecret" . }}
{{- if $secret }}
{{- $parts := splitn "://" 2 $url }}
{{- $rest := $parts._1 }}
{{- $auth := ":$(REDIS_PASSWORD)@" }}
{{- $hostpart := index (splitList "/" $rest) 0 }}
{{- if contains "@" $hostpart }}
{{- /* redis://user@host: keep the user name, add the password */}}
{{- $user := index (splitList "@" $hostpart) 0 }}
{{- $rest = trimPrefix (printf "%s@" $user) $rest }}
{{- $auth = printf "%s:$(REDIS_PASSWORD)@" $user }}
{{- end }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ include "eventflow.redisPasswordKey" . }}
- name: EVENTFLOW_REDIS_URL
  value: {{ printf "%s://%s%s" $parts._0 $auth $rest | quote }}
{{- else }}
- name: EVENTFLOW_REDIS_URL
  value: {{ $url | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Cross-field checks the JSON schema cannot phrase clearly. Fails rendering with one line. */}}
{{- define "eventflow.validate" -}}
{{- $r := .Values.redis }}
{{- if and $r.existingSecretUrlKey (not $r.existingSecret) }}
{{- fail "redis: redis.existingSecretUrlKey is set but redis.existingSecret (the Secret's name) is empty" }}
{{- end }}
{{- $externalUrl := or $r.url (and $r.existingSecret $r.existingSecretUrlKey) }}
{{- if and $r.bundled.enabled $externalUrl }}
{{- fail "redis: redis.url / redis.existingSecretUrlKey point at an external Redis but redis.bundled.enabled is true: set redis.bundled.enabled=false to use the external Redis" }}
{{- end }}
{{- if and (not $r.bundled.enabled) (not $externalUrl) }}
{{- fail "redis: no Redis configured: set redis.url (external Redis, e.g. redis://redis.example:6379/0), or redis.existingSecret with redis.existingSecretUrlKey, or redis.bundled.enabled=true" }}
{{- end }}
{{- if and $r.password $r.existingSecret }}
{{- fail "redis: set either redis.password or redis.existingSecret, not both" }}
{{- end }}
{{- if and $r.url (regexMatch "^rediss?://[^/@]*:[^/@]*@" $r.url) }}
{{- fail "redis: redis.url contains a password: keep it out of values and put it in a Secret (redis.existingSecret / redis.existingSecretPasswordKey)" }}
{{- end }}
{{- if not (or .Values.publisher.enabled .Values.subscriber.enabled .Values.admin.enabled .Values.dlq.enabled) }}
{{- fail "services: every service is disabled (publisher, subscriber, admin, dlq): enable at least one" }}
{{- end }}
{{- end }}

{{/*
The Secret holding the subscribers' ack key: subscriber.ackKey.existingSecret, or the one the
chart generates (ack-key-secret.yaml).
*/}}
{{- define "eventflow.ackKeySecret" -}}
{{- default (printf "%s-ack-key" (include "eventflow.fullname" .)) .Values.subscriber.ackKey.existingSecret -}}
{{- end }}
