{{/* The operator's API rights come from files/rbac.yaml, generated from
operator/kondense_operator/rbac.py (make sync-rbac): exact verbs and resources, no wildcards,
no Secrets. Children (Services, ConfigMaps, Jobs) go away with their CompressionJob through
owner references, so the operator deletes nothing itself. */}}

{{/* Needed in every watched namespace; with workers.mpiJob.enabled (backend mpi as Kubeflow
MPIJobs) the rights on mpijobs.kubeflow.org too, and only then. */}}
{{- define "kondense.namespacedRules" -}}
{{- $rbac := .Files.Get "files/rbac.yaml" | fromYaml -}}
{{- if not $rbac.namespaced -}}
{{- fail "files/rbac.yaml holds no namespaced rules: run make sync-rbac" -}}
{{- end -}}
{{- $rules := $rbac.namespaced -}}
{{- if .Values.workers.mpiJob.enabled -}}
{{- if not $rbac.mpijob -}}
{{- fail "files/rbac.yaml holds no mpijob rules: run make sync-rbac" -}}
{{- end -}}
{{- $rules = concat $rules $rbac.mpijob -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}

{{/* Needed cluster-wide whatever the scope (empty today: kopf runs standalone, with CRD and
namespace scanning off); any rule here gets a ClusterRole in every scope. */}}
{{- define "kondense.clusterRules" -}}
{{- $rbac := .Files.Get "files/rbac.yaml" | fromYaml -}}
{{- with $rbac.cluster -}}
{{- toYaml . -}}
{{- end -}}
{{- end -}}
