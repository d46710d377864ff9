{{- define "webhook-receiver.fullname" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "webhook-receiver.selectorLabels" -}}
app.kubernetes.io/name: webhook-receiver
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "webhook-receiver.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "webhook-receiver.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Where the receiver finds its secrets: an in-memory folder only its user can read. */}}
{{- define "webhook-receiver.secretsDir" -}}
/run/webhook-receiver
{{- end -}}

{{/* Its writable folder (the root filesystem is read-only): notices, Prefect's home. */}}
{{- define "webhook-receiver.stateDir" -}}
/var/lib/webhook-receiver
{{- end -}}
