{{/* Chart name, overridable. */}}
{{- define "svoe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name prefix of every object: RELEASE-svoe, or RELEASE alone if it already says svoe. */}}
{{- define "svoe.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "svoe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "svoe.labels" -}}
helm.sh/chart: {{ include "svoe.chart" . }}
app.kubernetes.io/name: {{ include "svoe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: svoe
{{- end }}

{{/* Selector of the operator pods (immutable in a Deployment: keep it small). */}}
{{- define "svoe.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "svoe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "svoe.operator.labels" -}}
{{ include "svoe.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "svoe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-operator" (include "svoe.fullname" .)) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag or repository@digest; the tag defaults to the appVersion. */}}
{{- define "svoe.imageRef" -}}
{{- $img := index . 0 }}{{- $ctx := index . 1 }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default $ctx.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/* Cluster-wide operator (ClusterRole, ClusterKopfPeering) unless namespaces are listed. */}}
{{- define "svoe.clusterWide" -}}
{{- if not .Values.operator.watchNamespace }}true{{ end }}
{{- end }}

{{/* Namespaces that get a namespaced Role and the feed ServiceAccount. */}}
{{- define "svoe.feedNamespaces" -}}
{{- $ns := list .Release.Namespace }}
{{- with .Values.operator.watchNamespace }}{{ $ns = append $ns . }}{{ end }}
{{- $ns | uniq | toJson }}
{{- end }}

{{/* Labels on monitoring.coreos.com objects. */}}
{{- define "svoe.monitoringLabels" -}}
{{ include "svoe.labels" . }}
{{- with .Values.monitoring.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The namespaces the PodMonitors look in: the listed ones, the watched one, or all. */}}
{{- define "svoe.podMonitorNamespaces" -}}
{{- if .Values.monitoring.podMonitor.namespaces -}}
matchNames:
  {{- toYaml .Values.monitoring.podMonitor.namespaces | nindent 2 }}
{{- else if not (include "svoe.clusterWide" .) -}}
matchNames:
  - {{ .Values.operator.watchNamespace }}
{{- else -}}
any: true
{{- end -}}
{{- end }}
