{{/* The release's full name: the release name when it already says vaultsync. */}}
{{- define "vaultsync.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "vaultsync.serviceAccountName" -}}
{{- default (include "vaultsync.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "vaultsync.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "vaultsync.labels" -}}
{{ include "vaultsync.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The operator's rules on VaultSecrets, Secrets, ServiceAccounts and Events: cluster-wide
     in a ClusterRole, or in a Role per watched namespace. Kept equal to deploy/rbac.yaml
     (tests/chart.rs compares them). */}}
{{- define "vaultsync.workRules" -}}
- apiGroups: ["vaultsync.io"]
  resources: ["vaultsecrets"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["vaultsync.io"]
  resources: ["vaultsecrets/status"]
  verbs: ["get", "patch"]
# blockOwnerDeletion on a Secret's ownerReference, where OwnerReferencesPermissionEnforcement is on.
- apiGroups: ["vaultsync.io"]
  resources: ["vaultsecrets/finalizers"]
  verbs: ["update"]
# get: ownership guard and drift check; list/watch: metadata of managed Secrets;
# create: a Secret that does not exist yet; patch: server-side apply; delete: the old
# Secret after a target rename or a type change.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# ServiceAccount identities: their azure.workload.identity annotations, and short-lived
# tokens for the token exchange (narrowed further by the admission policy).
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["serviceaccounts/token"]
  verbs: ["create"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{- define "vaultsync.rolloutRestartRules" -}}
# --allow-rollout-restarts: set the pod template annotation vaultsync.io/restartedAt (a
# merge patch, as kubectl rollout restart sends); no get, list or create.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["patch"]
{{- end -}}

{{- define "vaultsync.operatorIdentityFlag" -}}
{{- if eq .Values.operatorIdentity.type "none" -}}
none
{{- else -}}
{{- .Values.operatorIdentity.scope -}}
{{- end -}}
{{- end -}}
