{{- define "prefect-network-policy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: prefect-network-policy
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The pods of the prefect-server chart itself (not its postgresql and redis subcharts). */}}
{{- define "prefect-network-policy.prefectPods" -}}
app.kubernetes.io/name: prefect-server
app.kubernetes.io/instance: {{ .Values.prefectServerRelease }}
{{- end -}}
