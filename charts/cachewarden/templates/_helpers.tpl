{{/* Names ------------------------------------------------------------------------------------- */}}

{{- define "cachewarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cachewarden.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "cachewarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cachewarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "cachewarden.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "cachewarden.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cachewarden
{{- end -}}

{{- define "cachewarden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cachewarden.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "cachewarden.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Scope -------------------------------------------------------------------------------------- */}}

{{/* "true" when the operator watches every namespace. */}}
{{- define "cachewarden.clusterScope" -}}
{{- if eq .Values.rbac.scope "cluster" -}}true{{- end -}}
{{- end -}}

{{/* The watched namespaces (namespace scope), one per line: rbac.watchNamespaces or the release's. */}}
{{- define "cachewarden.watchNamespaces" -}}
{{- $list := .Values.rbac.watchNamespaces | default (list .Release.Namespace) -}}
{{- range (uniq $list) }}
{{ . }}
{{- end -}}
{{- end -}}

{{- define "cachewarden.watchNamespaceList" -}}
{{- splitList "\n" (include "cachewarden.watchNamespaces" . | trim) | toJson -}}
{{- end -}}

{{/* "true" when kopf peering is on (several replicas, or asked for). */}}
{{- define "cachewarden.ha" -}}
{{- if or .Values.ha.enabled (gt (int .Values.replicas) 1) -}}true{{- end -}}
{{- end -}}

{{- define "cachewarden.peeringName" -}}
{{- default (include "cachewarden.fullname" .) .Values.ha.peeringName -}}
{{- end -}}

{{/* Operator arguments --------------------------------------------------------------------------- */}}

{{- define "cachewarden.operatorArgs" -}}
- operator
{{- if include "cachewarden.clusterScope" . }}
- --all-namespaces
{{- else }}
{{- range (include "cachewarden.watchNamespaceList" . | fromJsonArray) }}
- --namespace={{ . }}
{{- end }}
{{- end }}
{{- if include "cachewarden.ha" . }}
- --peering={{ include "cachewarden.peeringName" . }}
- --priority=random
- --peering-lifetime={{ .Values.ha.peeringLifetime }}
{{- end }}
- --liveness=http://$(POD_IP):{{ .Values.operator.healthPort }}/healthz
{{- if .Values.metrics.enabled }}
- --metrics-address=$(POD_IP)
- --metrics-port={{ .Values.metrics.port }}
{{- end }}
- --log-level={{ .Values.operator.logLevel }}
- --converge-interval={{ .Values.operator.convergeInterval }}
- --pod-timeout={{ .Values.operator.podTimeout }}
{{- if .Values.operator.resolveServiceHosts }}
- --resolve-service-hosts
{{- end }}
{{- range .Values.operator.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* RBAC ------------------------------------------------------------------------------------------
What the operator calls, from the code (cache_operator/k8s.py, reconcile.py, incidents/executor_io.py,
handlers/, and kopf itself). docs/chart.md explains each rule. */}}

{{- define "cachewarden.operatorRules" -}}
# kopf watches both kinds and patches them (finalizer, annotations); the incident executor reads them.
- apiGroups: [cachewarden.io]
  resources: [cachepolicies, cacheincidents]
  verbs: [get, list, watch, patch]
# Automatic incidents: created by deterministic name, finished ones garbage-collected (TTL, history).
- apiGroups: [cachewarden.io]
  resources: [cacheincidents]
  verbs: [create, delete]
# Status is written by merge patch of the status subresource.
- apiGroups: [cachewarden.io]
  resources: [cachepolicies/status, cacheincidents/status]
  verbs: [patch]
# Children carry a controller owner reference with blockOwnerDeletion, which the
# OwnerReferencesPermissionEnforcement admission plugin allows only with this.
- apiGroups: [cachewarden.io]
  resources: [cachepolicies/finalizers]
  verbs: [update]
# Children: server-side apply (a PATCH; the API server authorizes it as create when the object does
# not exist yet), read by name for drift repair (applied only when drifted), deletion. Secrets are read
# by name (the token Secret, the Redis Secrets a policy references): no list/watch.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, patch, delete]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, create, patch, delete]
# kopf's pod index (one watch) and the target pods of a policy or incident.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# kopf posts Events (core/v1) on the objects it handles.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# Read only, for the cross-layer diagnosis of a policy's Redis (incidents/redis_cluster_io.py) and the
# Redis Service lookup (operator.resolveServiceHosts): the Service its URL names (by name), that
# Service's EndpointSlices, the Deployments/StatefulSets behind it (their replicas) and recent Events.
# Its pods (restarts, OOMKilled) are listed by the pods rule above.
- apiGroups: [""]
  resources: [services]
  verbs: [get]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list]
- apiGroups: [apps]
  resources: [deployments, statefulsets]
  verbs: [list]
- apiGroups: [""]
  resources: [events]
  verbs: [list]
{{- end -}}

{{- define "cachewarden.observationRules" -}}
# kopf observes CRDs (a new version, a re-created CRD) at runtime.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- if not (include "cachewarden.clusterScope" .) }}
# kopf follows the namespaces it watches (namespace scope only).
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
{{- end -}}

{{- define "cachewarden.peeringRules" -}}
{{- $resource := ternary "clusterkopfpeerings" "kopfpeerings" (eq (include "cachewarden.clusterScope" .) "true") -}}
- apiGroups: [kopf.dev]
  resources: [{{ $resource }}]
  verbs: [list, watch]
- apiGroups: [kopf.dev]
  resources: [{{ $resource }}]
  resourceNames: [{{ include "cachewarden.peeringName" . }}]
  verbs: [get, patch]
{{- end -}}
