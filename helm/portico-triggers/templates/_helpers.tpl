{{/*
Names and labels shared by every template.
*/}}

{{- define "portico-triggers.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release-qualified name; objects of one component append "-<component>" to it.
*/}}
{{- define "portico-triggers.fullname" -}}
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

{{- define "portico-triggers.operatorName" -}}
{{- printf "%s-operator" (include "portico-triggers.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "portico-triggers.queueServiceName" -}}
{{- printf "%s-queue" (include "portico-triggers.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "portico-triggers.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object of the release.
*/}}
{{- define "portico-triggers.labels" -}}
helm.sh/chart: {{ include "portico-triggers.chart" . }}
app.kubernetes.io/name: {{ include "portico-triggers.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: portico
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels of one component: `include "portico-triggers.selectorLabels" (list . "operator")`.
They never change across upgrades (a Deployment's selector is immutable).
*/}}
{{- define "portico-triggers.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "portico-triggers.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/*
All labels of one component's objects.
*/}}
{{- define "portico-triggers.componentLabels" -}}
{{ include "portico-triggers.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "portico-triggers.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "portico-triggers.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: repository, then "@digest" if set, else ":tag" (default: the chart's appVersion).
*/}}
{{- define "portico-triggers.image" -}}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag | toString) }}
{{- end }}
{{- end }}

{{/*
The queue service the operator posts jobs to: the bundled reference service, or queueService.url.
*/}}
{{- define "portico-triggers.queueUrl" -}}
{{- if .Values.queueService.enabled }}
{{- printf "http://%s.%s.svc:%v" (include "portico-triggers.queueServiceName" .) .Release.Namespace .Values.queueService.service.port }}
{{- else }}
{{- required "queueService.url is required unless queueService.enabled is true (the bundled reference queue service)" .Values.queueService.url }}
{{- end }}
{{- end }}

{{/*
The Secret holding the queue service's bearer token, or "" when requests are not authenticated.
*/}}
{{- define "portico-triggers.queueTokenSecret" -}}
{{- if .Values.queueService.token.existingSecret }}
{{- .Values.queueService.token.existingSecret }}
{{- else if .Values.queueService.token.create }}
{{- printf "%s-token" (include "portico-triggers.queueServiceName" .) }}
{{- end }}
{{- end }}

{{/*
The namespaces the operator watches, as a list ("" entries dropped, duplicates removed).
*/}}
{{- define "portico-triggers.watchNamespaces" -}}
{{- $namespaces := list }}
{{- range .Values.watchNamespaces }}
{{- if . }}{{ $namespaces = append $namespaces (tpl . $) }}{{ end }}
{{- end }}
{{- toJson ($namespaces | uniq) }}
{{- end }}

{{/*
RBAC rules the operator needs where triggers live: the JobTrigger watch, reads (the status writer
re-reads an object after a conflicting write) and patches (its finalizer), the status subresource,
Events on JobTriggers, and the Secrets the triggers reference (read and watched for rotation; never
written).
*/}}
{{- define "portico-triggers.operatorRules" -}}
- apiGroups: ["triggers.portico.dev"]
  resources: ["jobtriggers"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["triggers.portico.dev"]
  resources: ["jobtriggers/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
{{- if .Values.rbac.kubernetesJobs }}
# The kubernetesJob target: create a trigger's Jobs, find an existing one, prune old ones.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "delete"]
{{- end }}
{{- end }}

{{/*
The leader-election Lease: one per release, in the release namespace.
*/}}
{{- define "portico-triggers.leaseName" -}}
{{- include "portico-triggers.operatorName" . }}
{{- end }}

{{/* True ("true") when the single-active sources are spread over the replicas by shard Leases. */}}
{{- define "portico-triggers.sharded" -}}
{{- if and .Values.sharding.enabled .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}
