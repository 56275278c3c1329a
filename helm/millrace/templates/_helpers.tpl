{{/*
Shared definitions. The service list, the stream stages and the call graph live here once; every
template ranges over them. scripts/helm_check.py compares them with the code.
*/}}

{{/* The six services, in start order of the local stack (callees first). */}}
{{- define "millrace.serviceNames" -}}
llm-gateway storage embeddings metadata chunking ingestion
{{- end -}}

{{/* Services that consume a Redis stream (their KEDA trigger is the stage's consumer group). */}}
{{- define "millrace.streamStages" -}}
chunking metadata embeddings storage
{{- end -}}

{{/*
Who calls whom over gRPC (caller: callees), read from the MILLRACE_*_URL settings each service
reads. Sets the callers' URLs and the callees' NetworkPolicies.
*/}}
{{- define "millrace.callGraph" -}}
ingestion: [chunking, metadata, embeddings, storage, llm-gateway]
chunking: [storage]
metadata: [llm-gateway]
embeddings: [llm-gateway]
storage: []
llm-gateway: []
{{- end -}}

{{/* "true" for the services that connect to PostgreSQL: storage (chunks), ingestion and the llm-gateway (API keys). */}}
{{- define "millrace.usesDatabase" -}}
{{- if has . (list "ingestion" "storage" "llm-gateway") -}}true{{- end -}}
{{- end -}}

{{/*
The Secrets a service's pod mounts under /etc/millrace/tls (tls values), as volumes
(name: secret) with their mount paths. Call with (dict "root" $ "name" "storage").
*/}}
{{- define "millrace.tlsMounts" -}}
{{- $tls := .root.Values.tls -}}
{{- if $tls.grpc.enabled }}
- {name: grpc-tls, dir: /etc/millrace/tls/grpc, secret: {{ include "millrace.grpcSecret" . }}}
{{- end }}
{{- if $tls.redis.caSecret.name }}
- {name: redis-ca, dir: /etc/millrace/tls/redis-ca, secret: {{ $tls.redis.caSecret.name }}}
{{- end }}
{{- if $tls.redis.clientCertSecret.name }}
- {name: redis-client, dir: /etc/millrace/tls/redis-client, secret: {{ $tls.redis.clientCertSecret.name }}}
{{- end }}
{{- if include "millrace.usesDatabase" .name }}
{{- if $tls.postgresql.caSecret.name }}
- {name: postgres-ca, dir: /etc/millrace/tls/postgres-ca, secret: {{ $tls.postgresql.caSecret.name }}}
{{- end }}
{{- if $tls.postgresql.clientCertSecret.name }}
- {name: postgres-client, dir: /etc/millrace/tls/postgres-client, secret: {{ $tls.postgresql.clientCertSecret.name }}}
{{- end }}
{{- end }}
{{- end -}}

{{/* The Secret with a service's gRPC certificate, key and CA: <release>-<service>-tls. */}}
{{- define "millrace.grpcSecret" -}}
{{- printf "%s-tls" (include "millrace.name" .) -}}
{{- end -}}

{{/* The environment variable carrying a service's gRPC address to its callers. */}}
{{- define "millrace.urlVar" -}}
MILLRACE_{{ . | upper | replace "-" "_" }}_URL
{{- end -}}

{{/* A stage's Redis stream: <keyPrefix>:stream:<stage> (lib/pipeline/src/keys.rs). */}}
{{- define "millrace.stream" -}}
{{- printf "%s:stream:%s" .prefix .stage -}}
{{- end -}}

{{/* A stage's consumer group: the stage's name (lib/pipeline/src/runtime.rs, worker_config). */}}
{{- define "millrace.group" -}}
{{- .stage -}}
{{- end -}}

{{/* Where KEDA's redis-streams scaler finds a stage's stream. Call with (dict "root" $ "name" "storage"). */}}
{{- define "millrace.kedaRedis" -}}
address: {{ .root.Values.redis.keda.address | quote }}
enableTLS: {{ .root.Values.redis.keda.enableTLS | quote }}
stream: {{ include "millrace.stream" (dict "prefix" .root.Values.keyPrefix "stage" .name) | quote }}
consumerGroup: {{ include "millrace.group" (dict "stage" .name) | quote }}
{{- end -}}

{{- define "millrace.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Name of one service's objects: <fullname>-<service>. Call with (dict "root" $ "name" "storage"). */}}
{{- define "millrace.name" -}}
{{- printf "%s-%s" (include "millrace.fullname" .root) .name -}}
{{- end -}}

{{- define "millrace.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "millrace.labels" -}}
{{ include "millrace.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: millrace
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "millrace.image" -}}
{{- $img := .root.Values.image -}}
{{- printf "%s/%s%s:%s" $img.registry $img.repositoryPrefix .name (default .root.Chart.AppVersion $img.tag) -}}
{{- end -}}

{{/* Where each stage's metadata and embeddings come from: the values', else the upstream when there is one. */}}
{{- define "millrace.metadataProvider" -}}
{{- default (ternary "llm" "extractive" (ne .Values.llm.baseUrl "")) .Values.services.metadata.provider -}}
{{- end -}}

{{- define "millrace.embeddingsProvider" -}}
{{- default (ternary "gateway" "local" (and (ne .Values.llm.baseUrl "") (ne .Values.llm.embedModel ""))) .Values.services.embeddings.provider -}}
{{- end -}}

{{/*
MILLRACE_EMBEDDING_DIM of embeddings and storage: llm.embeddingDim, else 384 for vectors made in
the cluster (all-MiniLM-L6-v2, hashing), else the upstream model's own dimension when it is known.
Storage and embeddings refuse to start on a mismatch, so a guess would only move the error.
*/}}
{{- define "millrace.embeddingDim" -}}
{{- if not (kindIs "invalid" .Values.llm.embeddingDim) -}}
{{- .Values.llm.embeddingDim | int64 -}}
{{- else if ne (include "millrace.embeddingsProvider" .) "gateway" -}}
384
{{- else -}}
{{- $known := dict "text-embedding-3-small" 1536 "text-embedding-3-large" 3072 "text-embedding-ada-002" 1536 -}}
{{- $dim := get $known .Values.llm.embedModel -}}
{{- if not $dim -}}
{{- fail (printf "llm.embeddingDim: set it to the dimension of the upstream's %q vectors (embeddings come from the upstream, and the chart knows no dimension for that model)" .Values.llm.embedModel) -}}
{{- end -}}
{{- $dim -}}
{{- end -}}
{{- end -}}

{{/* Seconds Kubernetes waits after SIGTERM: longer than preStop sleep + drain deadline. */}}
{{- define "millrace.terminationGrace" -}}
{{- $deadline := div (add .Values.shutdownDeadlineMs 999) 1000 -}}
{{- add .Values.preStopSleepSeconds $deadline .Values.graceMarginSeconds -}}
{{- end -}}

{{/* The gateway's replica count for MILLRACE_LLM_REPLICAS: the most there can be. */}}
{{- define "millrace.gatewayReplicas" -}}
{{- $gw := index .Values.services "llm-gateway" -}}
{{- if $gw.autoscaling.enabled -}}{{ $gw.autoscaling.maxReplicas }}{{- else -}}{{ $gw.replicas }}{{- end -}}
{{- end -}}

{{/* "true" when an autoscaler owns a service's replica count: the HPA (ingestion, llm-gateway) or KEDA (stream stages). */}}
{{- define "millrace.autoscaled" -}}
{{- $svc := index .root.Values.services .name -}}
{{- $stage := has .name (splitList " " (include "millrace.streamStages" .root)) -}}
{{- if and $svc.autoscaling.enabled (or (not $stage) .root.Values.keda.enabled) -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{/* What the schema cannot say (it compares no two fields): fails the render with the reason. */}}
{{- define "millrace.validate" -}}
{{- range $name, $svc := .Values.services -}}
{{- if gt (int $svc.autoscaling.minReplicas) (int $svc.autoscaling.maxReplicas) -}}
{{- fail (printf "services.%s.autoscaling: minReplicas %v is above maxReplicas %v" $name $svc.autoscaling.minReplicas $svc.autoscaling.maxReplicas) -}}
{{- end -}}
{{- end -}}
{{- end -}}
