{{/*
The chart name, or nameOverride.
*/}}
{{- define "gatehouse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name. Truncated to 40 characters so that the
longest derived name ("<fullname>-operator-webhook" for RBAC, and the
Service names, which must be DNS labels of at most 63) stays valid.
*/}}
{{- define "gatehouse.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "gatehouse.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "gatehouse.labels" -}}
helm.sh/chart: {{ include "gatehouse.chart" . }}
{{ include "gatehouse.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gatehouse
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels that select the operator pods. Never change them in an upgrade: a
Deployment's selector is immutable.
*/}}
{{- define "gatehouse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gatehouse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
The operator's ServiceAccount name.
*/}}
{{- define "gatehouse.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gatehouse.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: repository@digest when a digest is set, else
repository:tag (tag defaulting to the appVersion).
*/}}
{{- define "gatehouse.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Names of the webhook objects, shared by the templates and the operator's
flags so that they cannot disagree.
*/}}
{{- define "gatehouse.webhookName" -}}
{{- printf "%s-sidecar-injector" (include "gatehouse.fullname" .) }}
{{- end }}
{{- define "gatehouse.webhookServiceName" -}}
{{- printf "%s-webhook" (include "gatehouse.fullname" .) }}
{{- end }}
{{- define "gatehouse.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "gatehouse.fullname" .) }}
{{- end }}
{{- define "gatehouse.injectionConfigName" -}}
{{- printf "%s-sidecar-injection" (include "gatehouse.fullname" .) }}
{{- end }}

{{/*
The headless xDS Service, and the name sidecars reach it by: the operator's
certificate holds it, the injected --xds-server-name checks it.
*/}}
{{- define "gatehouse.xdsServiceName" -}}
{{- printf "%s-xds" (include "gatehouse.fullname" .) }}
{{- end }}
{{- define "gatehouse.xdsHost" -}}
{{- printf "%s.%s.svc" (include "gatehouse.xdsServiceName" .) .Release.Namespace }}
{{- end }}
