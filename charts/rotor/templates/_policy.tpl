{{/*
The admission policy path (ARCHITECTURE.md, "Injection without the webhook"): CEL the API server
runs itself. One list of variables serves the MutatingAdmissionPolicy (which injects) and the
ValidatingAdmissionPolicy (which refuses), so the two never judge a pod differently.

The policy's scope is what CEL can decide exactly as rotor-webhook's planner does: every
container with a reference states `command`; references are reads, whole or inline, in the
common grammar; no annotation the policy does not implement. The webhook gets the rest: its
matchConditions add `rotor.policy.leavesToWebhook` (a referencing container still unwrapped
after the mutating policy ran, from-path or files). Inside the scope, a pod is injected, or
refused with the field and the fix. The contract (names, paths, settings) is rotor-core's; the
test `admission_policy` proves the stored pods equal to the webhook's through the real API server.
*/}}

{{/* CEL regexes (RE2) of the reference grammar (crates/rotor-core/src/reference.rs). */}}
{{/* Rust's char::is_whitespace is \p{Z} plus ASCII controls, is_control is \p{Cc}. */}}
{{- /* The ROTOR_* variables a pod author may set (rotor-core's var::POD_TUNABLE; the helm_chart
test compares the two): one list, as a CEL list and as the message names it. */ -}}
{{- define "rotor.policy.tunableList" -}}
ROTOR_LOG_LEVEL ROTOR_LOG_FORMAT ROTOR_DEADLINE ROTOR_REQUEST_TIMEOUT ROTOR_CONCURRENCY ROTOR_DAEMON_GRACE ROTOR_RENEW_GRACE
{{- end -}}
{{- define "rotor.policy.tunables" -}}
[{{ range $i, $v := splitList " " (include "rotor.policy.tunableList" .) }}{{ if $i }}, {{ end }}'{{ $v }}'{{ end }}]
{{- end -}}
{{- define "rotor.policy.tunableNames" -}}
{{ join ", " (splitList " " (include "rotor.policy.tunableList" .)) }}
{{- end -}}

{{- define "rotor.cel.head" -}}[^\p{Z}\p{Cc}#]{{- end -}}
{{- define "rotor.cel.segment" -}}[^/#%?\\{}$\p{Z}\p{Cc}]+{{- end -}}
{{- define "rotor.cel.path" -}}/*{{ include "rotor.cel.segment" . }}(/{{ include "rotor.cel.segment" . }})*/*{{- end -}}
{{- define "rotor.cel.version" -}}(#[1-9][0-9]{0,17})?{{- end -}}

{{/* `V` holds a reference exactly as reference::has_reference decides (a whole attempt or ${...}),
     priced like rotor.hasReference: the regex only where the value starts like a reference. */}}
{{- define "rotor.cel.isRef" -}}
((({{ . }}.startsWith('vault:') || {{ . }}.startsWith('bao:') || {{ . }}.startsWith('>>vault:') || {{ . }}.startsWith('>>bao:')) && {{ include "rotor.cel.wholeAttempt" . }}) || ({{ . }}.contains('${') && ({{ . }}.contains('${vault:') || {{ . }}.contains('${bao:') || {{ . }}.contains('${>>vault:') || {{ . }}.contains('${>>bao:'))) || {{ include "rotor.cel.awsRef" . }})
{{- end -}}

{{/* `V` holds an AWS reference exactly as aws_reference::aws_attempt and the inline prefixes
     decide: a Secrets Manager secret or SSM parameter ARN, whole or as ${arn:aws...}. The
     admission policy leaves these to the webhook (its readable check knows Vault's forms only). */}}
{{- define "rotor.cel.awsRef" -}}
(({{ . }}.startsWith('arn:aws') && {{ . }}.matches(r'^arn:aws(-cn|-us-gov)?:(secretsmanager:[^:#/]*:[^:#/]*:secret:|ssm:[^:#/]*:[^:#/]*:parameter/)')) || ({{ . }}.contains('${arn:aws') && ({{ . }}.contains('${arn:aws:') || {{ . }}.contains('${arn:aws-cn:') || {{ . }}.contains('${arn:aws-us-gov:'))))
{{- end -}}

{{/* `V` is a whole-reference attempt exactly as reference::whole_attempt decides. */}}
{{- define "rotor.cel.wholeAttempt" -}}
{{- $h := include "rotor.cel.head" . -}}
{{ . }}.matches(r'^(>>)?(vault|bao):({{ $h }}+#|{{ $h }}*/{{ $h }}*$)')
{{- end -}}

{{/* The pod (annotations map `.`) reads a from-path list with an entry, or files. */}}
{{- define "rotor.cel.pathOrFiles" -}}
{{ printf `%s.matches(r'[^,\p{Z}\t\n\v\f\r\x{85}]')` (include "rotor.cel.annotation" (list "from-path" "vault-env-from-path" "" .)) }} || {{ . }}.exists(k, k.startsWith('rotor.dev/file.'))
{{- end -}}

{{/* The annotation value of a setting: rotor.dev/ first, then the Bank-Vaults spellings (the
     third item, or '', when absent). */}}
{{- define "rotor.cel.annotation" -}}
{{- $rotor := index . 0 -}}{{- $bv := index . 1 -}}
{{- $absent := "" -}}{{- if gt (len .) 2 -}}{{- $absent = index . 2 -}}{{- end -}}
{{- $m := "variables.ann" -}}{{- if gt (len .) 3 -}}{{- $m = index . 3 -}}{{- end -}}
{{- if $bv -}}
('rotor.dev/{{ $rotor }}' in {{ $m }} ? {{ $m }}['rotor.dev/{{ $rotor }}'] : 'vault.security.banzaicloud.io/{{ $bv }}' in {{ $m }} ? {{ $m }}['vault.security.banzaicloud.io/{{ $bv }}'] : 'secrets-webhook.security.bank-vaults.io/{{ $bv }}' in {{ $m }} ? {{ $m }}['secrets-webhook.security.bank-vaults.io/{{ $bv }}'] : '{{ $absent }}')
{{- else -}}
('rotor.dev/{{ $rotor }}' in {{ $m }} ? {{ $m }}['rotor.dev/{{ $rotor }}'] : '{{ $absent }}')
{{- end -}}
{{- end -}}

{{/* The variables both policies evaluate. `params` is the ConfigMap the chart writes. */}}
{{- define "rotor.policy.variables" -}}
{{- $path := include "rotor.cel.path" . -}}
{{- $ver := include "rotor.cel.version" . -}}
{{- $h := include "rotor.cel.head" . -}}
- name: ann
  expression: "has(object.metadata.annotations) ? object.metadata.annotations : {}"
- name: pod
  expression: "request.namespace + '/' + (has(object.metadata.name) && object.metadata.name != '' ? object.metadata.name : (has(object.metadata.generateName) ? object.metadata.generateName : '') + '*')"
- name: inject
  expression: {{ printf "%s.trim().lowerAscii()" (include "rotor.cel.annotation" (list "inject" "" "absent")) | quote }}
- name: mutate
  expression: {{ printf "%s.trim().lowerAscii()" (include "rotor.cel.annotation" (list "mutate" "mutate" "absent")) | quote }}
- name: optedOut
  expression: "'kubernetes.io/config.mirror' in variables.ann || variables.inject in ['false', 'no', '0', 'skip'] || variables.mutate in ['false', 'no', '0', 'skip']"
# An opt-out annotation parse_bool refuses (mutate is read only when inject is not false).
- name: badFlag
  expression: "!('kubernetes.io/config.mirror' in variables.ann) && (!(variables.inject in ['absent', 'true', 'yes', '1', 'false', 'no', '0', 'skip']) || (!(variables.inject in ['false', 'no', '0', 'skip']) && !(variables.mutate in ['absent', 'true', 'yes', '1', 'false', 'no', '0', 'skip'])))"
- name: init
  expression: "has(object.spec.initContainers) ? object.spec.initContainers : []"
# from-path (with an entry: parse_from_path drops blank ones) and files make the webhook wrap
# containers that hold no reference themselves.
- name: pathOrFiles
  expression: {{ include "rotor.cel.pathOrFiles" "variables.ann" | quote }}
- name: anyWrapped
  expression: "(variables.init + object.spec.containers).exists(c, has(c.command) && size(c.command) > 0 && c.command[0] == '/rotor/bin/rotor-init')"
# Indexes of the containers that carry a reference and are not wrapped yet.
- name: initTargets
  expression: {{ printf "lists.range(size(variables.init)).filter(i, has(variables.init[i].env) && variables.init[i].env.exists(e, has(e.value) && %s) && !(has(variables.init[i].command) && size(variables.init[i].command) > 0 && variables.init[i].command[0] == '/rotor/bin/rotor-init'))" (include "rotor.cel.isRef" "e.value") | quote }}
- name: mainTargets
  expression: {{ printf "lists.range(size(object.spec.containers)).filter(i, has(object.spec.containers[i].env) && object.spec.containers[i].env.exists(e, has(e.value) && %s) && !(has(object.spec.containers[i].command) && size(object.spec.containers[i].command) > 0 && object.spec.containers[i].command[0] == '/rotor/bin/rotor-init'))" (include "rotor.cel.isRef" "e.value") | quote }}
- name: targets
  expression: "variables.initTargets.map(i, variables.init[i]) + variables.mainTargets.map(i, object.spec.containers[i])"
# The reference values of the targets, and the names of the variables holding them.
- name: refValues
  expression: {{ printf "variables.targets.map(c, c.env.filter(e, has(e.value) && %s).map(e, e.value)).flatten()" (include "rotor.cel.isRef" "e.value") | quote }}
- name: refNames
  expression: {{ printf "variables.targets.map(c, c.env.filter(e, has(e.value) && %s).map(e, e.name)).flatten()" (include "rotor.cel.isRef" "e.value") | quote }}
# Command and args words with the kubelet's `$$` escapes taken out (its scan pairs them first).
- name: words
  expression: "variables.targets.map(c, (has(c.command) ? c.command : []) + (has(c.args) ? c.args : [])).flatten().map(w, w.replace('$$', ''))"
# A read the planner accepts (whole or inline, common grammar), or a whole attempt it refuses.
- name: readable
  expression: {{ printf "variables.refValues.all(v, (size(v) <= 4096 && v.matches(r'^(vault|bao):%s#[^#\\p{Cc}]+%s$') && !v.matches(r'^(vault|bao):([^#]*/)?\\.\\.?(/|#)')) || (size(v) <= 700 && !%s && v.matches(r'^[^$]*(\\$\\{(vault|bao):%s#[^#{}\\p{Cc}]+%s\\}[^$]*)+$') && !v.matches(r'\\$\\{(vault|bao):([^#}]*/)?\\.\\.?(/|#)')))" $path $ver (include "rotor.cel.wholeAttempt" "v") $path $ver | quote }}
- name: malformed
  expression: {{ printf "lists.range(size(variables.refValues)).filter(i, %s && (variables.refValues[i].matches(r'^(>>)?(vault|bao):%s*/%s*$') || variables.refValues[i].matches(r'(?s)^(>>)?(vault|bao):%s+#(#.*)?$') || variables.refValues[i].matches(r'^(>>)?(vault|bao):[^#]*[%%?\\\\]') || variables.refValues[i].matches(r'^(>>)?(vault|bao):([^#]*/)?\\.\\.?(/|#|$)') || variables.refValues[i].matches(r'^(>>)?(vault|bao):/*#') || variables.refValues[i].matches(r'(?s)^(vault|bao):[^#]+#[^#]+#(.*[^0-9].*|0*)$')))" (include "rotor.cel.wholeAttempt" "variables.refValues[i]") $h $h $h | quote }}
- name: addrAnnotation
  expression: {{ include "rotor.cel.annotation" (list "vault-addr" "vault-addr") | quote }}
- name: addr
  expression: "variables.addrAnnotation != '' ? variables.addrAnnotation : params.data.addr"
- name: addrAllowed
  expression: "variables.addrAnnotation == '' || variables.addrAnnotation == params.data.addr || (params.data.addrAllowlist != '' && !variables.addrAnnotation.contains('*') && variables.addrAnnotation in params.data.addrAllowlist.split(','))"
# Not an address at all: not http(s), or a wildcard (an allowlist entry's own text).
- name: addrRefused
  expression: "variables.addrAnnotation != '' && ((!variables.addrAnnotation.startsWith('http://') && !variables.addrAnnotation.startsWith('https://')) || variables.addrAnnotation.contains('*'))"
# Annotations the policy reads; a pod with any other rotor or Bank-Vaults annotation goes to the webhook.
- name: otherAnnotations
  expression: "variables.ann.exists(k, (k.startsWith('rotor.dev/') && !(k in ['rotor.dev/vault-addr', 'rotor.dev/vault-role', 'rotor.dev/vault-auth-path', 'rotor.dev/vault-namespace', 'rotor.dev/inject', 'rotor.dev/mutate', 'rotor.dev/reload', 'rotor.dev/rotated-at', 'rotor.dev/observed-versions', 'rotor.dev/versions', 'rotor.dev/injected-by'])) || ((k.startsWith('vault.security.banzaicloud.io/') || k.startsWith('secrets-webhook.security.bank-vaults.io/')) && !(k.substring(k.indexOf('/') + 1) in ['vault-addr', 'vault-role', 'vault-path', 'vault-namespace', 'mutate'])))"
- name: role
  expression: {{ printf "%s" (include "rotor.cel.annotation" (list "vault-role" "vault-role")) | quote }}
- name: authPath
  expression: {{ printf "%s" (include "rotor.cel.annotation" (list "vault-auth-path" "vault-path")) | quote }}
- name: storeNamespace
  expression: {{ printf "%s" (include "rotor.cel.annotation" (list "vault-namespace" "vault-namespace")) | quote }}
# A `$(NAME)` the kubelet would expand: decidable when a word holds at most one `$(`.
- name: plainWords
  expression: "variables.words.all(w, w.split('$(').size() <= 2)"
- name: expanded
  expression: "variables.refNames.filter(n, variables.words.exists(w, w.contains('$(' + n + ')')))"
- name: inScope
  expression: >-
    !variables.optedOut && size(variables.targets) > 0
    && variables.inject in ['absent', 'true', 'yes', '1']
    && variables.mutate in ['absent', 'true', 'yes', '1']
    && !variables.ann.exists(k, (k.startsWith('rotor.dev/vault-') || k.startsWith('vault.security.banzaicloud.io/') || k.startsWith('secrets-webhook.security.bank-vaults.io/')) && variables.ann[k] == '')
    && !variables.otherAnnotations
    && !variables.init.exists(c, c.name == 'rotor-init-copy')
    && variables.targets.all(c, has(c.command) && size(c.command) > 0)
    && variables.plainWords
    && (variables.readable || size(variables.malformed) > 0)
    && (variables.addrAllowed || variables.addrRefused)
    {{- if .Values.webhook.configMapReferences }}
    && !{{ include "rotor.hasConfigMapEnv" . }}
    {{- end }}
# Why the planner would refuse this pod (the first reason, as rotor-webhook checks them), or ''.
- name: refusal
  expression: >-
    size(variables.malformed) > 0
    ? 'pod ' + variables.pod + ': env ' + variables.refNames[variables.malformed[0]] + ': ' + (size(variables.refValues[variables.malformed[0]]) > 60 ? variables.refValues[variables.malformed[0]].substring(0, 60) + '...' : variables.refValues[variables.malformed[0]]) + ' is not a reference rotor can read: expected vault:PATH#KEY or vault:PATH#KEY#VERSION (a positive integer); the path has no empty, . or .. segment and no %, ? or \\; fix the value'
    : has(object.spec.os) && object.spec.os.name == 'windows'
    ? 'pod ' + variables.pod + ': spec.os.name is windows: rotor-init is a Linux binary; run this workload without references (rotor.dev/inject: "false")'
    : has(object.spec.volumes) && object.spec.volumes.exists(v, (v.name == 'rotor-bin' && !((has(v.emptyDir) && has(v.emptyDir.medium) && v.emptyDir.medium == 'Memory') || (has(v.image) && has(v.image.reference) && v.image.reference == params.data.initImage))) || (v.name == 'rotor-token' && !(has(v.projected) && has(v.projected.sources) && v.projected.sources.exists(s, has(s.serviceAccountToken)))) || (v.name == 'rotor-pod-info' && !has(v.downwardAPI)) || (v.name.startsWith('rotor-files-') && !(has(v.emptyDir) && has(v.emptyDir.medium) && v.emptyDir.medium == 'Memory')))
    ? 'pod ' + variables.pod + ': spec.volumes has ' + object.spec.volumes.filter(v, v.name in ['rotor-bin', 'rotor-token', 'rotor-pod-info'] || v.name.startsWith('rotor-files-'))[0].name + ', a name rotor reserves for what it injects; rename yours'
    : variables.addrRefused
    ? 'pod ' + variables.pod + ': annotation vault-addr=' + variables.addrAnnotation + ' is not on the store allowlist (not an http:// or https:// address, or a wildcard); use the cluster default store (remove the annotation) or ask the platform team to add it to the allowlist'
    : variables.targets.exists(c, has(c.volumeMounts) && c.volumeMounts.exists(m, m.mountPath.matches(r'^/rotor/bin/*$') || m.mountPath.matches(r'^/var/run/secrets/rotor/*$')))
    ? 'pod ' + variables.pod + ': container ' + variables.targets.filter(c, has(c.volumeMounts) && c.volumeMounts.exists(m, m.mountPath.matches(r'^/rotor/bin/*$') || m.mountPath.matches(r'^/var/run/secrets/rotor/*$')))[0].name + ' mounts a volume at /rotor/bin or /var/run/secrets/rotor, where rotor mounts its own; mount it elsewhere'
    : size(variables.expanded) > 0
    ? 'pod ' + variables.pod + ': $(' + variables.expanded[0] + ') in command or args: the kubelet expands it before rotor-init runs, to the literal reference, not the secret; read ' + variables.expanded[0] + ' from the environment in the app (or run it through a shell: sh -c \'exec app "$' + variables.expanded[0] + '"\')'
    : variables.targets.exists(c, c.env.exists(e, e.name.startsWith('ROTOR_') && !(e.name in {{ include "rotor.policy.tunables" . }})))
    ? 'pod ' + variables.pod + ': a container sets ' + variables.targets.map(c, c.env.filter(e, e.name.startsWith('ROTOR_') && !(e.name in {{ include "rotor.policy.tunables" . }})).map(e, e.name)).flatten()[0] + ' in its env: rotor\'s store settings come from the pod\'s annotations (rotor.dev/vault-addr, ...) and the cluster settings; remove it (only {{ include "rotor.policy.tunableNames" . }} may be set there)'
    : ''
{{- end -}}

{{/* The admission policies are on where the API server serves them (v1, Kubernetes >= 1.36)
     and admissionPolicy.enabled is true; they carry no store CA (store.caConfigMap keeps every
     pod on the webhook, which reads the CA file). */}}
{{- define "rotor.policy.enabled" -}}
{{- if and .Values.admissionPolicy.enabled (not .Values.store.caConfigMap) (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy") -}}
true
{{- end -}}
{{- end -}}

{{/* Which namespaces and pods rotor's admission (webhook and policies) looks at. */}}
{{- define "rotor.admissionScope" -}}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        - kube-system
        - kube-node-lease
        - {{ .Release.Namespace }}
        {{- range .Values.webhook.excludeNamespaces }}
        - {{ . }}
        {{- end }}
objectSelector:
  matchExpressions:
    - key: rotor.dev/inject
      operator: NotIn
      values: ["false"]
{{- end -}}

{{/* CEL (no variables: a webhook's matchConditions have none): the pod still needs the webhook
     after the policy ran, because it has a from-path or file annotation, or a container that
     carries a reference and is not wrapped (the policy wraps every container in its scope). */}}
{{- define "rotor.policy.leavesToWebhook" -}}
(has(object.metadata.annotations) && ({{ include "rotor.cel.pathOrFiles" "object.metadata.annotations" }})) || [object.spec.containers, has(object.spec.initContainers) ? object.spec.initContainers : []].exists(list, list.exists(c, has(c.env) && c.env.exists(e, has(e.value) && {{ include "rotor.cel.isRef" "e.value" }}) && !(has(c.command) && size(c.command) > 0 && c.command[0] == '/rotor/bin/rotor-init'))){{ if .Values.webhook.configMapReferences }} || {{ include "rotor.hasConfigMapEnv" . }}{{ end }}
{{- end -}}

{{/* The JSON patch, op for op the planner's (crates/rotor-webhook/src/plan.rs): rotor-init's
     volume, the projected token, each target wrapped (command, args, mounts, settings), and the
     copy init container in front; plus the one mark of this path, the annotation
     rotor.dev/injected-by: admission-policy. [] outside the scope or when refused. */}}
{{- define "rotor.policy.patch" -}}
!variables.inScope || variables.refusal != '' ? [] : (
  (has(object.spec.volumes)
    ? variables.newVolumes.map(v, JSONPatch{op: 'add', path: '/spec/volumes/-', value: v})
    : [JSONPatch{op: 'add', path: '/spec/volumes', value: variables.newVolumes}])
  + variables.initTargets.map(i, variables.wrap.map(op, JSONPatch{op: 'add', path: '/spec/initContainers/' + string(i) + op[0], value: op[1] == 'command' ? ['/rotor/bin/rotor-init'] : ['--'] + variables.init[i].command + (has(variables.init[i].args) ? variables.init[i].args : [])})).flatten()
  + variables.mainTargets.map(i, variables.wrap.map(op, JSONPatch{op: 'add', path: '/spec/containers/' + string(i) + op[0], value: op[1] == 'command' ? ['/rotor/bin/rotor-init'] : ['--'] + object.spec.containers[i].command + (has(object.spec.containers[i].args) ? object.spec.containers[i].args : [])})).flatten()
  + variables.initTargets.map(i, has(variables.init[i].volumeMounts)
      ? variables.mounts.map(m, JSONPatch{op: 'add', path: '/spec/initContainers/' + string(i) + '/volumeMounts/-', value: m})
      : [JSONPatch{op: 'add', path: '/spec/initContainers/' + string(i) + '/volumeMounts', value: variables.mounts}]).flatten()
  + variables.mainTargets.map(i, has(object.spec.containers[i].volumeMounts)
      ? variables.mounts.map(m, JSONPatch{op: 'add', path: '/spec/containers/' + string(i) + '/volumeMounts/-', value: m})
      : [JSONPatch{op: 'add', path: '/spec/containers/' + string(i) + '/volumeMounts', value: variables.mounts}]).flatten()
  + variables.initTargets.map(i, variables.settings.filter(s, !variables.init[i].env.exists(e, e.name == s.name)).map(s, JSONPatch{op: 'add', path: '/spec/initContainers/' + string(i) + '/env/-', value: s})).flatten()
  + variables.mainTargets.map(i, variables.settings.filter(s, !object.spec.containers[i].env.exists(e, e.name == s.name)).map(s, JSONPatch{op: 'add', path: '/spec/containers/' + string(i) + '/env/-', value: s})).flatten()
  + [has(object.metadata.annotations)
    ? JSONPatch{op: 'add', path: '/metadata/annotations/rotor.dev~1injected-by', value: 'admission-policy'}
    : JSONPatch{op: 'add', path: '/metadata/annotations', value: {'rotor.dev/injected-by': 'admission-policy'}}]
  + (params.data.binarySource != 'copy' ? []
    : has(object.spec.initContainers)
    ? [JSONPatch{op: 'add', path: '/spec/initContainers/0', value: variables.copyContainer}]
    : [JSONPatch{op: 'add', path: '/spec/initContainers', value: [variables.copyContainer]}])
)
{{- end -}}

{{/* What the patch adds, built from the params (only the mutating policy evaluates these).
     Plain maps (a variable cannot name Object types); dyn() where a map mixes value types. */}}
{{- define "rotor.policy.patchVariables" -}}
- name: usesToken
  expression: "params.data.authMethod in ['kubernetes', 'jwt']"
- name: newVolumes
  expression: >-
    (has(object.spec.volumes) && object.spec.volumes.exists(v, v.name == 'rotor-bin') ? [] : [
      params.data.binarySource == 'copy'
      ? {'name': dyn('rotor-bin'), 'emptyDir': dyn({'medium': dyn('Memory'), 'sizeLimit': dyn(params.data.binVolumeSize)})}
      : {'name': dyn('rotor-bin'), 'image': dyn({'reference': dyn(params.data.initImage), 'pullPolicy': dyn(params.data.initPullPolicy)})}])
    + (!variables.usesToken || (has(object.spec.volumes) && object.spec.volumes.exists(v, v.name == 'rotor-token')) ? [] : [
      {'name': dyn('rotor-token'), 'projected': dyn({'sources': [{'serviceAccountToken': {'audience': dyn(params.data.tokenAudience), 'expirationSeconds': dyn(int(params.data.tokenExpirationSeconds)), 'path': dyn('token')}}]})}])
- name: wrap
  expression: "[['/command', 'command'], ['/args', 'args']]"
- name: mounts
  expression: >-
    [{'name': dyn('rotor-bin'), 'mountPath': dyn('/rotor/bin'), 'readOnly': dyn(true)}]
    + (variables.usesToken ? [{'name': dyn('rotor-token'), 'mountPath': dyn('/var/run/secrets/rotor'), 'readOnly': dyn(true)}] : [])
# InitSettings::to_env, in its order, for the settings the policy's scope can carry.
- name: settings
  expression: >-
    [{'name': dyn('ROTOR_ADDR'), 'value': dyn(variables.addr)},
     {'name': dyn('ROTOR_AUTH_METHOD'), 'value': dyn(params.data.authMethod)},
     {'name': dyn('ROTOR_LOG_FORMAT'), 'value': dyn(params.data.logFormat)},
     {'name': dyn('ROTOR_ROLE'), 'value': dyn(variables.role != '' ? variables.role : params.data.role != '' ? params.data.role : has(object.spec.serviceAccountName) ? object.spec.serviceAccountName : 'default')}]
    + (variables.authPath != '' || params.data.authPath != '' ? [{'name': dyn('ROTOR_AUTH_PATH'), 'value': dyn(variables.authPath != '' ? variables.authPath : params.data.authPath)}] : [])
    + (variables.usesToken ? [{'name': dyn('ROTOR_TOKEN_FILE'), 'value': dyn('/var/run/secrets/rotor/token')}] : [])
    + (variables.storeNamespace != '' || params.data.namespace != '' ? [{'name': dyn('ROTOR_NAMESPACE'), 'value': dyn(variables.storeNamespace != '' ? variables.storeNamespace : params.data.namespace)}] : [])
    + (params.data.fromPathDeny != '' ? [{'name': dyn('ROTOR_FROM_PATH_DENY'), 'value': dyn(params.data.fromPathDeny)}] : [])
- name: copyContainer
  expression: >-
    {'name': dyn('rotor-init-copy'), 'image': dyn(params.data.initImage), 'imagePullPolicy': dyn(params.data.initPullPolicy),
     'command': dyn(['/rotor-init', 'copy', '/rotor/bin']),
     'volumeMounts': dyn([{'name': 'rotor-bin', 'mountPath': '/rotor/bin'}]),
     'resources': dyn({'requests': {'cpu': '10m', 'memory': '16Mi'}, 'limits': {'memory': '32Mi'}}),
     'securityContext': dyn({'runAsNonRoot': dyn(true), 'runAsUser': dyn(65532), 'runAsGroup': dyn(65532), 'allowPrivilegeEscalation': dyn(false), 'readOnlyRootFilesystem': dyn(true),
       'capabilities': dyn({'drop': ['ALL']}), 'seccompProfile': dyn({'type': 'RuntimeDefault'})})}
{{- end -}}
