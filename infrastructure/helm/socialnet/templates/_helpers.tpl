{{/* Names and labels shared by every template (app.kubernetes.io/* conventions). */}}

{{- define "socialnet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's base name; components append -api, -front, -db ... */}}
{{- define "socialnet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else if contains (include "socialnet.name" .) .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "socialnet.name" .) | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "socialnet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "socialnet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "socialnet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "socialnet.labels" -}}
helm.sh/chart: {{ include "socialnet.chart" . }}
{{ include "socialnet.selectorLabels" . }}
app.kubernetes.io/part-of: socialnet
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Component names. */}}
{{- define "socialnet.api.name" -}}{{ include "socialnet.fullname" . }}-api{{- end -}}
{{- define "socialnet.canary.name" -}}{{ include "socialnet.fullname" . }}-api-canary{{- end -}}
{{- define "socialnet.front.name" -}}{{ include "socialnet.fullname" . }}-front{{- end -}}
{{- define "socialnet.db.name" -}}{{ include "socialnet.fullname" . }}-db{{- end -}}
{{- define "socialnet.config.name" -}}{{ include "socialnet.fullname" . }}-config{{- end -}}
{{- define "socialnet.dbInitdb.name" -}}{{ include "socialnet.fullname" . }}-db-initdb{{- end -}}

{{- define "socialnet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ include "socialnet.fullname" . }}{{- else -}}default{{- end -}}
{{- end -}}

{{/* Selector of one API track: {{ include "socialnet.api.selectorLabels" (list . "stable") }} */}}
{{- define "socialnet.api.selectorLabels" -}}
{{ include "socialnet.selectorLabels" (index . 0) }}
app.kubernetes.io/component: api
socialnet.example/track: {{ index . 1 }}
{{- end -}}

{{/* An image: pinned by digest when one is given (the control plane always gives one), else by tag. */}}
{{- define "socialnet.image" -}}
{{- $root := index . 0 -}}
{{- $digest := "" -}}{{- if gt (len .) 3 -}}{{- $digest = index . 3 | default "" -}}{{- end -}}
{{- if $digest -}}
{{- printf "%s/%s@%s" $root.Values.image.registry (index . 1) $digest -}}
{{- else -}}
{{- printf "%s/%s:%s" $root.Values.image.registry (index . 1) (index . 2) -}}
{{- end -}}
{{- end -}}

{{- define "socialnet.db.host" -}}
{{- if .Values.database.external.enabled -}}{{ .Values.database.external.host }}{{- else -}}{{ include "socialnet.db.name" . }}{{- end -}}
{{- end -}}

{{- define "socialnet.db.port" -}}
{{- if .Values.database.external.enabled -}}{{ .Values.database.external.port }}{{- else -}}5432{{- end -}}
{{- end -}}

{{- define "socialnet.db.image" -}}
{{- printf "%s:%s" .Values.database.image.repository .Values.database.image.tag -}}
{{- end -}}

{{/*
Where pods find their secret files: the API the items of its Secret; the others one folder per
Secret (owner/, backup/, and login/ for the API's login the logins Jobs hand to the database).
*/}}
{{- define "socialnet.secretsDir" -}}/run/secrets/socialnet{{- end -}}

{{/*
libpq's settings for a client of the database logging in as a role: {{ include "socialnet.pgEnv" (list . "role") }}.
The password comes from PGPASSFILE, which "socialnet.pgpass" writes.
*/}}
{{- define "socialnet.pgEnv" -}}
{{- $root := index . 0 -}}
- name: PGHOST
  value: {{ include "socialnet.db.host" $root | quote }}
- name: PGPORT
  value: {{ include "socialnet.db.port" $root | quote }}
- name: PGDATABASE
  value: {{ $root.Values.database.name | quote }}
- name: PGUSER
  value: {{ index . 1 | quote }}
- name: PGPASSFILE
  value: /tmp/pgpass
{{- end -}}

{{/*
A shell line giving libpq the password in the file `.` as a 0600 pgpass file (pgpass escapes `:`
and `\`): never a variable or an argument another process could read.
*/}}
{{- define "socialnet.pgpass" -}}
umask 077; { printf '*:*:*:*:'; sed 's/[\\:]/\\&/g' {{ . }}; } > /tmp/pgpass
{{- end -}}

{{/* A Secret volume of one password file, `password`: {{ include "socialnet.passwordVolume" (list "name" "secret") }} */}}
{{- define "socialnet.passwordVolume" -}}
- name: {{ index . 0 }}
  secret:
    secretName: {{ index . 1 }}
    defaultMode: 0440
    items:
      - {key: password, path: password}
{{- end -}}

{{/* NetworkPolicy egress: the cluster DNS. */}}
{{- define "socialnet.egress.dns" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .Values.networkPolicy.dns.namespace }}
      podSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.dns.podLabels | nindent 10 }}
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- end -}}

{{/* NetworkPolicy egress: PostgreSQL, the bundled one's pods or any address on the external one's
port (a policy cannot name a host). */}}
{{- define "socialnet.egress.database" -}}
- ports:
    - {port: {{ include "socialnet.db.port" . }}, protocol: TCP}
  {{- if not .Values.database.external.enabled }}
  to:
    - podSelector:
        matchLabels:
          {{- include "socialnet.selectorLabels" . | nindent 10 }}
          app.kubernetes.io/component: database
  {{- end }}
{{- end -}}

{{/* Pod and container security: non-root, no privilege escalation, no capabilities. */}}
{{- define "socialnet.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "socialnet.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* ingress-nginx cookie affinity of the sticky canary (release.traffic.sticky). */}}
{{- define "socialnet.ingress.affinity" -}}
nginx.ingress.kubernetes.io/affinity: cookie
nginx.ingress.kubernetes.io/session-cookie-name: {{ .Values.canary.traffic.stickyCookie | quote }}
nginx.ingress.kubernetes.io/session-cookie-path: /
nginx.ingress.kubernetes.io/session-cookie-samesite: Lax
{{- end -}}

{{- define "socialnet.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
The API pod of one track: {{ include "socialnet.api.podTemplate" (dict "root" . "track" "stable" "tag" .Values.api.tag "digest" .Values.api.digest "gitSha" .Values.api.gitSha "extraEnv" .Values.api.extraEnv) }}
*/}}
{{- define "socialnet.api.podTemplate" -}}
{{- $root := .root -}}
{{- $api := $root.Values.api -}}
{{- $secrets := $root.Values.secrets -}}
metadata:
  labels:
    {{- include "socialnet.labels" $root | nindent 4 }}
    {{- include "socialnet.api.selectorLabels" (list $root .track) | nindent 4 }}
    app.kubernetes.io/version: {{ .tag | quote }}
  annotations:
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    # A changed Secret (a rotation) rolls the replicas at the next upgrade, whose migration Job
    # first gives the new login its password; empty in `helm template`, which reads no cluster.
    checksum/secrets: {{ (lookup "v1" "Secret" $root.Release.Namespace $secrets.existingSecret).data | toJson | sha256sum }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ $api.port | quote }}
    prometheus.io/path: /metrics
spec:
  serviceAccountName: {{ include "socialnet.serviceAccountName" $root }}
  automountServiceAccountToken: {{ $root.Values.serviceAccount.automount }}
  terminationGracePeriodSeconds: {{ $api.terminationGracePeriodSeconds }}
  {{- include "socialnet.imagePullSecrets" $root | nindent 2 }}
  securityContext:
    {{- include "socialnet.podSecurityContext" 10001 | nindent 4 }}
  {{- if $root.Values.canary.antiAffinity }}
  # Stable and canary replicas on different nodes when the cluster allows (preferred, not
  # required: a one-node cluster still runs both).
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels:
                {{- include "socialnet.api.selectorLabels" (list $root (ternary "stable" "canary" (eq .track "canary"))) | nindent 16 }}
  {{- end }}
  containers:
    - name: api
      image: {{ include "socialnet.image" (list $root $api.repository .tag .digest) }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      ports:
        - name: http
          containerPort: {{ $api.port }}
          protocol: TCP
      envFrom:
        - configMapRef:
            name: {{ include "socialnet.config.name" $root }}
      env:
        - name: SOCIALNET_VERSION
          value: {{ .tag | quote }}
        - name: SOCIALNET_GIT_SHA
          value: {{ .gitSha | quote }}
        - name: SOCIALNET_TRACK
          value: {{ .track }}
        # The login role goes with its password: both from the Secret a rotation rewrites.
        - name: SOCIALNET_DB_USER
          valueFrom:
            secretKeyRef:
              name: {{ $secrets.existingSecret }}
              key: {{ $secrets.dbUserKey }}
        - name: SOCIALNET_DB_PASSWORD_FILE
          value: {{ include "socialnet.secretsDir" $root }}/db-password
        - name: SOCIALNET_TOKEN_SECRET_FILE
          value: {{ include "socialnet.secretsDir" $root }}/token-secret
        # Tokens signed with the previous key stay valid during a rotation's overlap (empty: none).
        - name: SOCIALNET_TOKEN_SECRET_PREVIOUS_FILE
          value: {{ include "socialnet.secretsDir" $root }}/token-secret-previous
        {{- range $name, $value := .extraEnv }}
        - name: {{ $name }}
          value: {{ $value | quote }}
        {{- end }}
      volumeMounts:
        - name: secrets
          mountPath: {{ include "socialnet.secretsDir" $root }}
          readOnly: true
        - name: tmp
          mountPath: /tmp
      startupProbe:
        httpGet: {path: /healthz, port: http}
        periodSeconds: {{ $api.probes.startup.periodSeconds }}
        failureThreshold: {{ $api.probes.startup.failureThreshold }}
      livenessProbe:
        httpGet: {path: /healthz, port: http}
        periodSeconds: {{ $api.probes.liveness.periodSeconds }}
        timeoutSeconds: {{ $api.probes.liveness.timeoutSeconds }}
        failureThreshold: {{ $api.probes.liveness.failureThreshold }}
      readinessProbe:
        httpGet: {path: /readyz, port: http}
        periodSeconds: {{ $api.probes.readiness.periodSeconds }}
        timeoutSeconds: {{ $api.probes.readiness.timeoutSeconds }}
        failureThreshold: {{ $api.probes.readiness.failureThreshold }}
      lifecycle:
        # Lets the ingress controller stop sending requests before uvicorn stops accepting them.
        preStop:
          exec: {command: ["sleep", "5"]}
      resources:
        {{- toYaml $api.resources | nindent 8 }}
      securityContext:
        {{- include "socialnet.containerSecurityContext" $root | nindent 8 }}
  volumes:
    # The keys the API reads, nothing else of the Secret.
    - name: secrets
      secret:
        secretName: {{ $secrets.existingSecret }}
        defaultMode: 0440
        items:
          - {key: {{ $secrets.dbPasswordKey }}, path: db-password}
          - {key: {{ $secrets.tokenSecretKey }}, path: token-secret}
          - {key: {{ $secrets.tokenSecretPreviousKey }}, path: token-secret-previous}
    - name: tmp
      emptyDir: {}
{{- end -}}
