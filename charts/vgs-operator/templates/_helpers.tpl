{{/* Chart name, shortened to the 63 characters of a label value. */}}
{{- define "vgs-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every object name: RELEASE-vgs-operator, or RELEASE when it contains the chart name. */}}
{{- define "vgs-operator.fullname" -}}
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

{{/* Name of cluster-scoped objects: the release namespace is part of it, so that releases of the
same name in two namespaces do not share a ClusterRole. */}}
{{- define "vgs-operator.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "vgs-operator.fullname" .) | trunc 253 | trimSuffix "-" }}
{{- end }}

{{- define "vgs-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vgs-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vgs-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "vgs-operator.labels" -}}
helm.sh/chart: {{ include "vgs-operator.chart" . }}
{{ include "vgs-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: vgs
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "vgs-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vgs-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Leader election is on with more than one replica, or when asked for. */}}
{{- define "vgs-operator.leaderElection" -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.leaderElection.enabled }}true{{ else }}false{{ end }}
{{- end }}

{{- define "vgs-operator.leaseName" -}}
{{- default (include "vgs-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "vgs-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "vgs-operator.vfepImage" -}}
{{- printf "%s:%s" .Values.vfepImage.repository (.Values.vfepImage.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* What the operator may do to the objects it reconciles, wherever it watches them. Keep in step
with the operator's calls (operator/src): nothing more. */}}
{{- define "vgs-operator.rules" -}}
# GroundSystems: watched, their status written (server-side apply of the status subresource), and
# the recording-retention finalizer added and removed (a JSON patch of metadata.finalizers;
# groundsystems/finalizers for clusters that enforce owner-reference permissions).
- apiGroups: [vgs.io]
  resources: [groundsystems]
  verbs: [get, list, watch, patch]
- apiGroups: [vgs.io]
  resources: [groundsystems/status]
  verbs: [patch]
- apiGroups: [vgs.io]
  resources: [groundsystems/finalizers]
  verbs: [update]
# Children, written by server-side apply (create + patch), read before each write (get) and watched
# (list, watch). Only the simulator's Deployment and Service are ever deleted (spec.simulator.enabled:
# false); the ConfigMap and the claims go with their GroundSystem through owner references, or stay
# (a retained recording claim).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [configmaps, persistentvolumeclaims]
  verbs: [get, list, watch, create, patch]
# Kubernetes Events about GroundSystems.
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
