{{/* The chart's name, or nameOverride. */}}
{{- define "kondense.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every object's name: fullnameOverride, else the release name (with the chart's
name appended unless the release name already holds it). */}}
{{- define "kondense.fullname" -}}
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

{{- define "kondense.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Standard labels of every object. */}}
{{- define "kondense.labels" -}}
helm.sh/chart: {{ include "kondense.chart" . }}
{{ include "kondense.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kondense
{{- end -}}

{{/* The labels that select the operator's pod (stable across upgrades). */}}
{{- define "kondense.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kondense.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kondense.operatorSelectorLabels" -}}
{{ include "kondense.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kondense.operatorServiceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "kondense.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference from repository, tag and digest: repository@digest when a digest is
set (what a registry serves under a digest never changes), else repository:tag. */}}
{{- define "kondense.imageRef" -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}
{{- end -}}

{{- define "kondense.operatorImage" -}}
{{- $i := .Values.operator.image -}}
{{- include "kondense.imageRef" (dict "repository" $i.repository "tag" (default .Chart.AppVersion $i.tag) "digest" $i.digest) -}}
{{- end -}}

{{- define "kondense.workerImage" -}}
{{- $i := .Values.workers.image -}}
{{- $tag := default (default .Chart.AppVersion .Values.operator.image.tag) $i.tag -}}
{{- include "kondense.imageRef" (dict "repository" $i.repository "tag" $tag "digest" $i.digest) -}}
{{- end -}}

{{/* The namespaces whose CompressionJobs the operator runs, as a list: the release namespace
(scope namespace), watch.namespaces (scope list), or none (scope all: every namespace). */}}
{{- define "kondense.watchedNamespaces" -}}
{{- if eq .Values.watch.scope "namespace" -}}
{{- list .Release.Namespace | toJson -}}
{{- else if eq .Values.watch.scope "list" -}}
{{- if not .Values.watch.namespaces -}}
{{- fail "watch.namespaces must list at least one namespace when watch.scope is list" -}}
{{- end -}}
{{- .Values.watch.namespaces | uniq | toJson -}}
{{- else -}}
{{- list | toJson -}}
{{- end -}}
{{- end -}}

{{/* The ServiceAccount worker pods run under ("" = the namespace's default). With scope all a
created one exists only in the release namespace, so workers elsewhere would not start: use
the namespace default there unless the user names an account that exists everywhere. */}}
{{- define "kondense.workerServiceAccountName" -}}
{{- if and .Values.workers.serviceAccount.create (eq .Values.watch.scope "all") -}}
{{- else -}}
{{- .Values.workers.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kondense.zooCacheClaim" -}}
{{- if .Values.workers.zooCache.existingClaim -}}
{{- .Values.workers.zooCache.existingClaim -}}
{{- else if .Values.workers.zooCache.create -}}
{{- printf "%s-zoo-cache" (include "kondense.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The worker config file: every key of operator/kondense_operator/worker-config.schema.json,
nothing else (unknown keys are errors there); tests/test_chart.py loads it through the operator. */}}
{{- define "kondense.workerConfig" -}}
{{- $w := .Values.workers -}}
image: {{ include "kondense.workerImage" . | quote }}
imagePullPolicy: {{ $w.image.pullPolicy }}
serviceAccountName: {{ include "kondense.workerServiceAccountName" . | quote }}
zooCacheClaim: {{ include "kondense.zooCacheClaim" . | quote }}
nodeSelector: {{ $w.nodeSelector | toJson }}
tolerations: {{ $w.tolerations | toJson }}
gpuNodeSelector: {{ $w.gpu.nodeSelector | toJson }}
gpuTolerations: {{ $w.gpu.tolerations | toJson }}
resources: {{ $w.resources | toJson }}
port: {{ $w.port }}
backoffLimit: {{ $w.backoffLimit }}
mpiJob: {{ $w.mpiJob | toJson }}
imagePullSecrets: {{ $w.imagePullSecrets | default list | toJson }}
podAnnotations: {{ $w.podAnnotations | default dict | toJson }}
podLabels: {{ $w.podLabels | default dict | toJson }}
priorityClassName: {{ $w.priorityClassName | default "" | quote }}
schedulerName: {{ $w.schedulerName | default "" | quote }}
env: {{ $w.env | default list | toJson }}
{{- /* an ID set to null in the values is gone from them (Helm deletes null keys): null here, which
the operator reads as "leave it out" (OpenShift's restricted SCC assigns it), not as its default */}}
{{- $ids := $w.podSecurityContext | default dict }}
podSecurityContext: {"runAsUser": {{ index $ids "runAsUser" | toJson }}, "runAsGroup": {{ index $ids "runAsGroup" | toJson }}, "fsGroup": {{ index $ids "fsGroup" | toJson }}}
shmSizeLimit: {{ $w.shmSizeLimit | default "" | quote }}
{{- end -}}
