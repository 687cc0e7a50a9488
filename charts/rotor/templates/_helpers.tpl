{{- define "rotor.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "rotor.labels" -}}
app.kubernetes.io/name: rotor
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "rotor.webhook.name" -}}{{ include "rotor.fullname" . }}-webhook{{- end -}}
{{- define "rotor.reloader.name" -}}{{ include "rotor.fullname" . }}-reloader{{- end -}}

{{- define "rotor.webhook.selector" -}}
app.kubernetes.io/name: rotor
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "rotor.reloader.selector" -}}
app.kubernetes.io/name: rotor
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: reloader
{{- end -}}

{{- define "rotor.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "rotor.initImage" -}}
{{ .Values.initImage.repository }}:{{ .Values.initImage.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Restricted Pod Security Standard, pod level. */}}
{{- define "rotor.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Restricted Pod Security Standard, container level. */}}
{{- define "rotor.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* CEL: the pod carries a reference (env value or from-path annotation). Only such pods reach the webhook.
     Priced for the API server's CEL cost limit: a value is scanned once (contains '${'), the regex runs only on
     values that start like a reference, so a pod without references at the 3 MiB limit is never refused.
     The shape of a whole reference is rotor-core's (reference::has_reference), checked against one table of
     cases (crates/rotor-core/testdata/reference_shapes.tsv) through the real API server. */}}
{{- define "rotor.hasReference" -}}
(has(object.metadata.annotations) && ('rotor.dev/from-path' in object.metadata.annotations || 'vault.security.banzaicloud.io/vault-env-from-path' in object.metadata.annotations || 'secrets-webhook.security.bank-vaults.io/vault-env-from-path' in object.metadata.annotations || object.metadata.annotations.exists(k, k.startsWith('rotor.dev/file.')))) || [object.spec.containers, has(object.spec.initContainers) ? object.spec.initContainers : []].exists(list, list.exists(c, has(c.env) && c.env.exists(e, has(e.value) && (((e.value.startsWith('vault:') || e.value.startsWith('bao:') || e.value.startsWith('>>vault:') || e.value.startsWith('>>bao:')) && e.value.matches('^(>>)?(vault|bao):([^[:space:]#]+#|[^[:space:]#]*/)')) || (e.value.contains('${') && (e.value.contains('${vault:') || e.value.contains('${bao:') || e.value.contains('${>>vault:') || e.value.contains('${>>bao:'))) || (e.value.startsWith('arn:aws') && e.value.matches('^arn:aws(-cn|-us-gov)?:(secretsmanager:[^:#/]*:[^:#/]*:secret:|ssm:[^:#/]*:[^:#/]*:parameter/)')) || (e.value.contains('${arn:aws') && (e.value.contains('${arn:aws:') || e.value.contains('${arn:aws-cn:') || e.value.contains('${arn:aws-us-gov:')))))))
{{- end -}}

{{/* CEL: a container takes env from ConfigMaps (which may hold references). Added with webhook.configMapReferences. */}}
{{- define "rotor.hasConfigMapEnv" -}}
[object.spec.containers, has(object.spec.initContainers) ? object.spec.initContainers : []].exists(list, list.exists(c, (has(c.envFrom) && c.envFrom.exists(f, has(f.configMapRef))) || (has(c.env) && c.env.exists(e, has(e.valueFrom) && has(e.valueFrom.configMapKeyRef)))))
{{- end -}}

{{/* How rotor-init reaches pods; image volumes need Kubernetes >= 1.35 (README). */}}
{{- define "rotor.initBinarySource" -}}
{{- $source := .Values.initImage.source | default "copy" -}}
{{- if and (eq $source "image-volume") (not (semverCompare ">=1.35-0" .Capabilities.KubeVersion.Version)) -}}
{{- fail (printf "initImage.source=image-volume: this cluster is Kubernetes %s, image volumes need 1.35 or newer (and containerd >= 2.1 on every node); set initImage.source=copy" .Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- $source -}}
{{- end -}}
