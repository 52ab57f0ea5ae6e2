{{/* Labels shared by every object; component is passed as .component. */}}
{{- define "svoe-thanos.labels" -}}
app.kubernetes.io/name: thanos
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: svoe
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ .root.Chart.Name }}-{{ .root.Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "svoe-thanos.selector" -}}
app.kubernetes.io/name: thanos
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "svoe-thanos.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}
{{- end }}

{{/* Workload annotations: a checkov skip that holds only while no digest is configured. */}}
{{- define "svoe-thanos.workloadAnnotations" -}}
{{- if not .Values.image.digest -}}
annotations:
  checkov.io/skip1: CKV_K8S_43=Pinned to a Thanos release tag; its digest cannot be resolved offline. Set image.digest to pull by digest.
{{- end }}
{{- end }}

{{- define "svoe-thanos.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsUser }}
fsGroup: {{ .Values.runAsUser }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "svoe-thanos.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
capabilities:
  drop:
  - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "svoe-thanos.probes" -}}
livenessProbe:
  httpGet:
    path: /-/healthy
    port: http
  periodSeconds: 30
  timeoutSeconds: 5
  failureThreshold: 4
readinessProbe:
  httpGet:
    path: /-/ready
    port: http
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
{{- end }}

{{- define "svoe-thanos.required" -}}
{{- $_ := required "cluster.name is required: layer thanos/values/clusters/<env>-<cluster>.yaml" .Values.cluster.name -}}
{{- $_ := required "objstore.bucket is required: layer thanos/values/<env>.yaml" .Values.objstore.bucket -}}
{{- $_ := required "aws.region is required: layer thanos/values/<env>.yaml" .Values.aws.region -}}
{{- $_ := required "serviceAccount.roleArn is required: layer thanos/values/<env>.yaml" .Values.serviceAccount.roleArn -}}
{{- if not .Values.mesh.clusters }}{{ fail "mesh.clusters is empty: layer thanos/values/<env>.yaml" }}{{ end -}}
{{- $found := false -}}
{{- range .Values.mesh.clusters }}{{ if eq .name $.Values.cluster.name }}{{ $found = true }}{{ if ne (int .id) (int $.Values.cluster.id) }}{{ fail (printf "cluster.id %v differs from mesh.clusters entry %s (id %v)" $.Values.cluster.id .name .id) }}{{ end }}{{ end }}{{ end -}}
{{- if not $found }}{{ fail (printf "cluster.name %s is not listed in mesh.clusters" .Values.cluster.name) }}{{ end -}}
{{- end }}
