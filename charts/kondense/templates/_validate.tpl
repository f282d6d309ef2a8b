{{/* Checks values.schema.json cannot make: it cannot compare two fields, nor see the names the
chart builds from the release name. Included by deployment.yaml, which every release renders;
each failure names the value to change. */}}

{{/* A resource quantity (500m, 2Gi, 1e3, 4) as a float64, for comparisons only. The schema has
already refused anything but a quantity. */}}
{{- define "kondense.quantity" -}}
{{- $q := toString . -}}
{{- $suffix := regexFind "([numkMGTPE]|[KMGTPE]i)$" $q -}}
{{- if regexMatch "[eE][-+]?[0-9]+$" $q -}}{{- $suffix = "" -}}{{- end -}}
{{- $number := trimSuffix $suffix $q | trimPrefix "+" | float64 -}}
{{- $scale := dict "" 1.0 "n" 1e-9 "u" 1e-6 "m" 1e-3 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18
    "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 -}}
{{- mulf $number (get $scale $suffix) -}}
{{- end -}}

{{- define "kondense.validate" -}}
{{- $metricsPort := int .Values.metrics.port -}}
{{- if and $metricsPort (eq $metricsPort (int .Values.operator.healthPort)) -}}
{{- fail (printf "operator.healthPort and metrics.port are both %d: the operator serves /healthz and /metrics on two different ports; change one (metrics.port 0 turns metrics off)" $metricsPort) -}}
{{- end -}}
{{- if and .Values.metrics.service.enabled $metricsPort -}}
{{- $svc := printf "%s-metrics" (include "kondense.fullname" .) -}}
{{- if or (gt (len $svc) 63) (not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $svc)) -}}
{{- fail (printf "the metrics Service's name %q is not a DNS-1035 label (63 characters at most, a lower-case letter first): set fullnameOverride (55 characters at most), or a shorter release name or nameOverride" $svc) -}}
{{- end -}}
{{- end -}}
{{- $res := .Values.operator.resources | default dict -}}
{{- $requests := $res.requests | default dict -}}
{{- range $name, $limit := $res.limits | default dict -}}
{{- $request := get $requests $name -}}
{{- if and (not (kindIs "invalid" $request)) (toString $request) -}}
{{- if lt (include "kondense.quantity" $limit | float64) (include "kondense.quantity" $request | float64) -}}
{{- fail (printf "operator.resources.limits.%s (%v) is below operator.resources.requests.%s (%v): the API server refuses a limit below its request; raise the limit or lower the request" $name $limit $name $request) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
