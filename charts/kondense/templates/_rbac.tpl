{{/* The operator's API rights: a copy of operator/kondense_operator/rbac.py (NAMESPACED_RULES,
CLUSTER_RULES), kept equal to it by tests/test_chart.py. Exact verbs and resources, no
wildcards, no Secrets. */}}

{{/* Needed in every watched namespace. */}}
{{- define "kondense.namespacedRules" -}}
- apiGroups: [kondense.dev]
  resources: [compressionjobs]
  verbs: [get, list, watch, patch]
- apiGroups: [kondense.dev]
  resources: [compressionjobs/status]
  verbs: [get, patch, update]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}

{{/* Needed cluster-wide whatever the scope (kopf watches CRDs and namespaces). */}}
{{- define "kondense.clusterRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end -}}
