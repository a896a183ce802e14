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
pusher:
  binary: eventflow-pusher
  grpcService: eventflow-pusher
archive:
  binary: eventflow-archive
  grpcService: eventflow.v1.ArchiveService
relay:
  binary: eventflow-relay
  grpcService: eventflow-relay
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

{{/* Labels every pod of this release carries (any component). */}}
{{- define "eventflow.instanceLabels" -}}
app.kubernetes.io/name: {{ include "eventflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of one component. Call with (dict "root" $ "component" "publisher"). */}}
{{- define "eventflow.selectorLabels" -}}
{{ include "eventflow.instanceLabels" .root }}
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

{{/*
The Secret holding the Redis password ("" when there is no password): redis.existingSecret, or
the chart's own (redis.password, or for the bundled Redis a generated one).
*/}}
{{- define "eventflow.redisPasswordSecret" -}}
{{- if .Values.redis.existingSecret }}
{{- .Values.redis.existingSecret }}
{{- else if or .Values.redis.password .Values.redis.bundled.enabled }}
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
{{- printf "%s://%s.%s.svc:6379/0" (ternary "rediss" "redis" .Values.redis.tls.enabled) (include "eventflow.redisName" .) .Release.Namespace }}
{{- else }}
{{- .Values.redis.url }}
{{- end }}
{{- end }}

{{/*
One Redis URL with the password from a Secret spliced in as "$(REDIS_PASSWORD)" (Kubernetes
expands it from the REDIS_PASSWORD variable defined before it): redis://host -> redis://:$(REDIS_PASSWORD)@host,
redis://user@host -> redis://user:$(REDIS_PASSWORD)@host (the ACL user name is kept).
*/}}
{{- define "eventflow.redisUrlWithPassword" -}}
{{- $parts := splitn "://" 2 . }}
{{- $rest := $parts._1 }}
{{- $auth := ":$(REDIS_PASSWORD)@" }}
{{- $hostpart := index (splitList "/" $rest) 0 }}
{{- if contains "@" $hostpart }}
{{- $user := index (splitList "@" $hostpart) 0 }}
{{- $rest = trimPrefix (printf "%s@" $user) $rest }}
{{- $auth = printf "%s:$(REDIS_PASSWORD)@" $user }}
{{- end }}
{{- printf "%s://%s%s" $parts._0 $auth $rest }}
{{- end }}

{{/*
The Redis settings of the service containers, one of:
- cluster mode (redis.clusterNodes set): EVENTFLOW_REDIS_CLUSTER_NODES, every node URL with the
  password spliced in like the single URL below, and no EVENTFLOW_REDIS_URL (the services
  refuse both, and count an environment value as given);
- EVENTFLOW_REDIS_URL, the whole URL from a Secret (redis.existingSecret + redis.existingSecretUrlKey), or
- EVENTFLOW_REDIS_URL, the base URL with the password from a Secret spliced in through
  Kubernetes' $(VAR) expansion, or
- EVENTFLOW_REDIS_URL, the base URL as is.
*/}}
{{- define "eventflow.redisEnv" -}}
{{- $r := .Values.redis }}
{{- $secret := include "eventflow.redisPasswordSecret" . }}
{{- if and $r.existingSecret $r.existingSecretUrlKey (not $r.clusterNodes) }}
- name: EVENTFLOW_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $r.existingSecret }}
      key: {{ $r.existingSecretUrlKey }}
{{- else }}
{{- if $secret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ include "eventflow.redisPasswordKey" . }}
{{- end }}
{{- if $r.clusterNodes }}
{{- $nodes := list }}
{{- range $r.clusterNodes }}
{{- $nodes = append $nodes (ternary (include "eventflow.redisUrlWithPassword" .) . (ne $secret "")) }}
{{- end }}
- name: EVENTFLOW_REDIS_CLUSTER_NODES
  value: {{ join "," $nodes | quote }}
{{- else }}
{{- $url := include "eventflow.redisBaseUrl" . }}
- name: EVENTFLOW_REDIS_URL
  value: {{ ternary (include "eventflow.redisUrlWithPassword" $url) $url (ne $secret "") | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Cross-field checks the JSON schema cannot phrase clearly. Fails rendering with one line. */}}
{{- define "eventflow.validate" -}}
{{- $r := .Values.redis }}
{{- if and $r.existingSecretUrlKey (not $r.existingSecret) }}
{{- fail "redis: redis.existingSecretUrlKey is set but redis.existingSecret (the Secret's name) is empty" }}
{{- end }}
{{- if $r.clusterNodes }}
{{- if $r.bundled.enabled }}
{{- fail "redis: redis.clusterNodes points at an existing Redis Cluster but redis.bundled.enabled is true (the bundled Redis is one node, not a cluster): set redis.bundled.enabled=false" }}
{{- end }}
{{- if $r.url }}
{{- fail "redis: set either redis.url (one Redis) or redis.clusterNodes (Redis Cluster), not both" }}
{{- end }}
{{- if $r.existingSecretUrlKey }}
{{- fail "redis: redis.existingSecretUrlKey (one whole URL) cannot be used with redis.clusterNodes: give the password with redis.existingSecret and redis.existingSecretPasswordKey" }}
{{- end }}
{{- $schemes := dict }}
{{- range $r.clusterNodes }}
{{- if regexMatch "^rediss?://[^/@]*:[^/@]*@" . }}
{{- fail "redis: a redis.clusterNodes URL contains a password: keep it out of values and put it in a Secret (redis.existingSecret / redis.existingSecretPasswordKey)" }}
{{- end }}
{{- $_ := set $schemes (index (splitList "://" .) 0) true }}
{{- end }}
{{- if gt (len $schemes) 1 }}
{{- fail "redis: redis.clusterNodes mixes redis:// and rediss:// URLs: use one scheme for every node" }}
{{- end }}
{{- if and $r.tls.enabled (not (hasKey $schemes "rediss")) }}
{{- fail "redis: redis.tls.enabled is true but redis.clusterNodes are not rediss://" }}
{{- end }}
{{- end }}
{{- $externalUrl := or $r.url (and $r.existingSecret $r.existingSecretUrlKey) $r.clusterNodes }}
{{- if and $r.bundled.enabled $externalUrl }}
{{- fail "redis: redis.url / redis.existingSecretUrlKey point at an external Redis but redis.bundled.enabled is true: set redis.bundled.enabled=false to use the external Redis" }}
{{- end }}
{{- if and (not $r.bundled.enabled) (not $externalUrl) }}
{{- fail "redis: no Redis configured: set redis.url (external Redis, e.g. redis://redis.example:6379/0), or redis.existingSecret with redis.existingSecretUrlKey, or redis.clusterNodes (an existing Redis Cluster), or redis.bundled.enabled=true" }}
{{- end }}
{{- if and $r.password $r.existingSecret }}
{{- fail "redis: set either redis.password or redis.existingSecret, not both" }}
{{- end }}
{{- if and $r.url (regexMatch "^rediss?://[^/@]*:[^/@]*@" $r.url) }}
{{- fail "redis: redis.url contains a password: keep it out of values and put it in a Secret (redis.existingSecret / redis.existingSecretPasswordKey)" }}
{{- end }}
{{- if and $r.tls.enabled (not $r.tls.existingSecret) }}
{{- fail "redis: redis.tls.enabled needs redis.tls.existingSecret (a Secret with ca.crt, and for the bundled Redis its tls.crt/tls.key)" }}
{{- end }}
{{- if and $r.tls.enabled $r.url (not (hasPrefix "rediss://" $r.url)) }}
{{- fail "redis: redis.tls.enabled is true but redis.url is not rediss://" }}
{{- end }}
{{- if and $r.tls.clientCert.existingSecret (not $r.tls.enabled) }}
{{- fail "redis: redis.tls.clientCert.existingSecret needs redis.tls.enabled=true" }}
{{- end }}
{{- $t := .Values.tls }}
{{- if $t.enabled }}
{{- if and $t.existingSecret $t.certManager.enabled }}
{{- fail "tls: set either tls.existingSecret or tls.certManager.enabled, not both" }}
{{- end }}
{{- if not (or $t.existingSecret $t.certManager.enabled) }}
{{- fail "tls: tls.enabled needs a certificate: tls.existingSecret (a kubernetes.io/tls Secret) or tls.certManager.enabled with tls.certManager.issuerRef.name" }}
{{- end }}
{{- if and $t.certManager.enabled (not $t.certManager.issuerRef.name) }}
{{- fail "tls: tls.certManager.enabled needs tls.certManager.issuerRef.name (an Issuer or ClusterIssuer)" }}
{{- end }}
{{- else if or $t.certManager.enabled $t.clientCA.enabled }}
{{- fail "tls: tls.certManager / tls.clientCA are set but tls.enabled is false: set tls.enabled=true" }}
{{- end }}
{{- if and .Values.auth.policy .Values.auth.policyExistingSecret }}
{{- fail "auth: set either auth.policy or auth.policyExistingSecret, not both" }}
{{- end }}
{{- if and .Values.metrics.protect (not .Values.auth.enabled) }}
{{- fail "metrics: metrics.protect needs auth.enabled=true (the /metrics token is checked like any other)" }}
{{- end }}
{{- $sm := .Values.metrics.serviceMonitor }}
{{- if and .Values.metrics.protect $sm.enabled (not (or $sm.tokenSecret.name (include "eventflow.authTokensSecret" .))) }}
{{- fail "metrics: metrics.protect with a ServiceMonitor needs a token for Prometheus: set metrics.serviceMonitor.tokenSecret.name (or use auth tokens)" }}
{{- end }}
{{- if not (or .Values.publisher.enabled .Values.subscriber.enabled .Values.admin.enabled .Values.dlq.enabled .Values.pusher.enabled .Values.archive.enabled) }}
{{- fail "services: every service is disabled (publisher, subscriber, admin, dlq, pusher, archive): enable at least one" }}
{{- end }}
{{- end }}

{{/*
The Secret holding the subscribers' ack key: subscriber.ackKey.existingSecret, or the one the
chart generates (ack-key-secret.yaml).
*/}}
{{- define "eventflow.ackKeySecret" -}}
{{- default (printf "%s-ack-key" (include "eventflow.fullname" .)) .Values.subscriber.ackKey.existingSecret -}}
{{- end }}

{{/*
A generated secret value, the same in every template of one render: the value already in
Secret `name` key `key` (kept across upgrades), else a random one. Memoized in .Values so the
Secret and a checksum annotation computed in another template agree. Call with
(dict "root" $ "name" <secret> "key" <key> "length" <n>).
*/}}
{{- define "eventflow.generatedValue" -}}
{{- $memo := printf "__generated_%s_%s" .name .key }}
{{- if not (hasKey .root.Values $memo) }}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name }}
{{- $value := "" }}
{{- if $existing }}
{{- $value = index ($existing.data | default dict) .key | default "" | b64dec }}
{{- end }}
{{- $_ := set .root.Values $memo ($value | default (randAlphaNum (int .length))) }}
{{- end }}
{{- index .root.Values $memo }}
{{- end }}

{{/* The Secret with the gRPC server certificate (tls.crt, tls.key[, ca.crt]). */}}
{{- define "eventflow.tlsSecret" -}}
{{- default (printf "%s-tls" (include "eventflow.fullname" .)) .Values.tls.existingSecret -}}
{{- end }}

{{/* The Secret with the client CA for mutual TLS: tls.clientCA.existingSecret, else the TLS Secret. */}}
{{- define "eventflow.clientCASecret" -}}
{{- default (include "eventflow.tlsSecret" .) .Values.tls.clientCA.existingSecret -}}
{{- end }}

{{/*
The Secret with the full-access bearer tokens (EVENTFLOW_AUTH_TOKENS): auth.existingSecret, or
the one the chart generates when auth is on and neither a Secret nor a policy is given; "" when
there is none.
*/}}
{{- define "eventflow.authTokensSecret" -}}
{{- $a := .Values.auth }}
{{- if $a.enabled }}
{{- if $a.existingSecret }}
{{- $a.existingSecret }}
{{- else if not (or $a.policy $a.policyExistingSecret) }}
{{- printf "%s-auth" (include "eventflow.fullname" .) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Whether the chart generates the tokens Secret ("true" or ""). */}}
{{- define "eventflow.authTokensGenerated" -}}
{{- if and (include "eventflow.authTokensSecret" .) (not .Values.auth.existingSecret) }}true{{ end }}
{{- end }}

{{/*
The tokens as they are now (generated, or read from auth.existingSecret with lookup; "" where
lookup cannot see the cluster): the checksum that rolls the pods when they change, since the
services read the tokens at start.
*/}}
{{- define "eventflow.authTokensChecksum" -}}
{{- $secret := include "eventflow.authTokensSecret" . }}
{{- if include "eventflow.authTokensGenerated" . }}
{{- include "eventflow.generatedValue" (dict "root" . "name" $secret "key" .Values.auth.tokensKey "length" 48) | sha256sum }}
{{- else if $secret }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $secret }}
{{- index (($existing | default dict).data | default dict) .Values.auth.tokensKey | default "" | sha256sum }}
{{- end }}
{{- end }}

{{/* The Secret with the authorization policy file: auth.policyExistingSecret, or the generated one from auth.policy; "" when none. */}}
{{- define "eventflow.authPolicySecret" -}}
{{- $a := .Values.auth }}
{{- if $a.enabled }}
{{- if $a.policyExistingSecret }}
{{- $a.policyExistingSecret }}
{{- else if $a.policy }}
{{- printf "%s-auth-policy" (include "eventflow.fullname" .) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Secret volumes of a service pod and their mounts, as YAML lists. Directory mounts (never
subPath), so Kubernetes replaces the files in place: rotated certificates and an edited policy
reach running pods, and the services reload them. Call with (dict "root" $ "component" <name>).
*/}}
{{- define "eventflow.secretVolumes" -}}
{{- $v := .root.Values }}
{{- if eq .component "subscriber" }}
# The ack key every replica shares (subscriber.ackKey).
- name: ack-key
  secret:
    secretName: {{ include "eventflow.ackKeySecret" .root }}
{{- end }}
{{- if $v.tls.enabled }}
# The gRPC server certificate (tls.*).
- name: tls
  secret:
    secretName: {{ include "eventflow.tlsSecret" .root }}
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- if $v.tls.clientCA.enabled }}
# The CA client certificates must be signed by (mutual TLS).
- name: tls-client-ca
  secret:
    secretName: {{ include "eventflow.clientCASecret" .root }}
    items:
      - key: {{ $v.tls.clientCA.key }}
        path: ca.crt
{{- end }}
{{- end }}
{{- with include "eventflow.authPolicySecret" .root }}
# The authorization policy (auth.policy / auth.policyExistingSecret).
- name: auth-policy
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $v.auth.policyKey }}
        path: policy.json
{{- end }}
{{- if $v.redis.tls.enabled }}
# The CA that signed Redis's certificate (redis.tls).
- name: redis-ca
  secret:
    secretName: {{ $v.redis.tls.existingSecret }}
    items:
      - key: {{ $v.redis.tls.caKey }}
        path: ca.crt
{{- with $v.redis.tls.clientCert.existingSecret }}
# The client certificate presented to Redis (redis.tls.clientCert).
- name: redis-client-cert
  secret:
    secretName: {{ . }}
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- end }}
{{- end }}

{{/* Mount paths of the volumes of eventflow.secretVolumes, by volume name. */}}
{{- define "eventflow.secretMountPaths" -}}
ack-key: /etc/eventflow/ack-key
tls: /etc/eventflow/tls
tls-client-ca: /etc/eventflow/tls-client-ca
auth-policy: /etc/eventflow/auth
redis-ca: /etc/eventflow/redis-ca
redis-client-cert: /etc/eventflow/redis-client
{{- end }}

{{/*
Environment naming the files of eventflow.secretVolumes (paths only; the secrets stay in the
volumes). Call with (dict "root" $ "component" <name>).
*/}}
{{- define "eventflow.secretFileEnv" -}}
{{- $v := .root.Values }}
{{- $paths := include "eventflow.secretMountPaths" . | fromYaml }}
{{- if eq .component "subscriber" }}
- name: EVENTFLOW_ACK_KEY_FILE
  value: {{ index $paths "ack-key" }}/{{ $v.subscriber.ackKey.key }}
{{- with $v.subscriber.ackKey.previousKey }}
- name: EVENTFLOW_ACK_KEY_PREVIOUS_FILE
  value: {{ index $paths "ack-key" }}/{{ . }}
{{- end }}
{{- end }}
{{- if $v.tls.enabled }}
- name: EVENTFLOW_TLS_CERT_FILE
  value: {{ index $paths "tls" }}/tls.crt
- name: EVENTFLOW_TLS_KEY_FILE
  value: {{ index $paths "tls" }}/tls.key
{{- if $v.tls.clientCA.enabled }}
- name: EVENTFLOW_TLS_CLIENT_CA_FILE
  value: {{ index $paths "tls-client-ca" }}/ca.crt
{{- end }}
{{- end }}
{{- if include "eventflow.authPolicySecret" .root }}
- name: EVENTFLOW_AUTH_FILE
  value: {{ index $paths "auth-policy" }}/policy.json
{{- end }}
{{- if $v.redis.tls.enabled }}
- name: EVENTFLOW_REDIS_CA_FILE
  value: {{ index $paths "redis-ca" }}/ca.crt
{{- if $v.redis.tls.clientCert.existingSecret }}
- name: EVENTFLOW_REDIS_CLIENT_CERT_FILE
  value: {{ index $paths "redis-client-cert" }}/tls.crt
- name: EVENTFLOW_REDIS_CLIENT_KEY_FILE
  value: {{ index $paths "redis-client-cert" }}/tls.key
{{- end }}
{{- end }}
{{- end }}
