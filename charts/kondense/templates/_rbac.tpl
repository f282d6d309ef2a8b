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
{{- /* standby replicas peer in a KopfPeering of every watched namespace (watch.scope all: a
ClusterKopfPeering, in kondense.clusterRules) */ -}}
{{- if and (gt (int .Values.operator.replicas) 1) (ne .Values.watch.scope "all") -}}
{{- if not $rbac.peering -}}
{{- fail "files/rbac.yaml holds no peering rules: run make sync-rbac" -}}
{{- end -}}
{{- $rules = concat $rules $rbac.peering -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}

{{/* Needed cluster-wide whatever the scope (none but the ClusterKopfPeering's with standby
replicas and watch.scope all: CRD and namespace scanning are off); any rule here gets a
ClusterRole. */}}
{{- define "kondense.clusterRules" -}}
{{- $rbac := .Files.Get "files/rbac.yaml" | fromYaml -}}
{{- $rules := $rbac.cluster | default list -}}
{{- if and (gt (int .Values.operator.replicas) 1) (eq .Values.watch.scope "all") -}}
{{- if not $rbac.clusterPeering -}}
{{- fail "files/rbac.yaml holds no clusterPeering rules: run make sync-rbac" -}}
{{- end -}}
{{- $rules = concat $rules $rbac.clusterPeering -}}
{{- end -}}
{{- with $rules -}}
{{- toYaml . -}}
{{- end -}}
{{- end -}}
