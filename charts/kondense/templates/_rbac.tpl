{{/* The operator's API rights: a copy of operator/kondense_operator/rbac.py (NAMESPACED_RULES,
CLUSTER_RULES), kept equal to it by tests/test_chart.py. Exact verbs and resources, no
wildcards, no Secrets. */}}

{{/* Needed in every watched namespace: kopf lists, watches and patches the CompressionJobs
(progress annotations) and posts Events; the reconcile loop patches their status, creates the
stage children (headless Service, ConfigMap, Indexed Job), patches Jobs (spec.suspend) and
follows Jobs and Pods. Children go away with their CompressionJob through owner references
(the garbage collector), so the operator deletes nothing itself. */}}
{{- define "kondense.namespacedRules" -}}
- apiGroups: [kondense.dev]
  resources: [compressionjobs]
  verbs: [get, list, watch, patch]
- apiGroups: [kondense.dev]
  resources: [compressionjobs/status]
  verbs: [get, patch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [services]
  verbs: [get, create]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}

{{/* Needed cluster-wide whatever the scope: nothing (kopf runs standalone, with CRD and namespace
scanning off). A rule added here gets a ClusterRole in every scope. */}}
{{- define "kondense.clusterRules" -}}
{{- end -}}
