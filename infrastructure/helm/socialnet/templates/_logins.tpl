{{/*
The API's logins in the database: the owner gives the one the API's Secret names its password
before the replicas roll (the migration Job), and takes the others' away once they have rolled
(the post-upgrade Job), through the logins.* functions of database-initdb-configmap.yaml. The
scripts travel in the containers' command: hooks run before the release's ConfigMaps exist.
*/}}

{{- define "socialnet.logins.enableSql" -}}
\set ON_ERROR_STOP on
\set login `cat {{ include "socialnet.secretsDir" . }}/login/user`
\set password `cat {{ include "socialnet.secretsDir" . }}/login/password`
-- The name alone first: an unknown role stops here, before a statement carries the password.
SELECT logins.known(:'login') AS enabling;
SELECT logins.enable(:'login', :'password');
{{- end -}}

{{- define "socialnet.logins.retireSql" -}}
\set ON_ERROR_STOP on
\set login `cat {{ include "socialnet.secretsDir" . }}/login/user`
SELECT logins.retire_others(:'login') AS retired;
{{- end -}}

{{/*
A container running `sql` with psql as the owner, next to the API's login files:
{{ include "socialnet.logins.container" (dict "root" . "name" "enable-login" "sql" (include "socialnet.logins.enableSql" .)) }}
*/}}
{{- define "socialnet.logins.container" -}}
{{- $secrets := include "socialnet.secretsDir" .root -}}
- name: {{ .name }}
  image: {{ include "socialnet.db.image" .root }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  command:
    - /bin/sh
    - -ec
    - |
      {{ include "socialnet.pgpass" (printf "%s/owner/password" $secrets) }}
      until pg_isready --quiet; do sleep 2; done
      psql --no-psqlrc --quiet <<'SQL'
      {{- .sql | nindent 6 }}
      SQL
  env:
    {{- include "socialnet.pgEnv" (list .root .root.Values.database.roles.owner) | nindent 4 }}
  resources:
    requests: {cpu: 10m, memory: 32Mi}
    limits: {memory: 64Mi}
  securityContext:
    {{- include "socialnet.containerSecurityContext" .root | nindent 4 }}
  volumeMounts:
    - {name: owner, mountPath: {{ $secrets }}/owner, readOnly: true}
    - {name: login, mountPath: {{ $secrets }}/login, readOnly: true}
    - {name: tmp, mountPath: /tmp}
{{- end -}}

{{/* Its volumes: the owner's password, the login's name (and password: (list . true)). */}}
{{- define "socialnet.logins.volumes" -}}
{{- $secrets := (index . 0).Values.secrets -}}
{{ include "socialnet.passwordVolume" (list "owner" $secrets.ownerSecret) }}
- name: login
  secret:
    secretName: {{ $secrets.existingSecret }}
    defaultMode: 0440
    items:
      - {key: {{ $secrets.dbUserKey }}, path: user}
      {{- if index . 1 }}
      - {key: {{ $secrets.dbPasswordKey }}, path: password}
      {{- end }}
- name: tmp
  emptyDir: {}
{{- end -}}
