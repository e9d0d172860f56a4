{{/* Names, labels and the values every template derives from. */}}

{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sluice.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sluice.labels" -}}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "sluice.serviceAccountName" -}}
{{- default (include "sluice.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The control plane's objects. */}}
{{- define "sluice.cp.name" -}}
{{- printf "%s-controlplane" (include "sluice.fullname" .) -}}
{{- end -}}

{{- define "sluice.cp.selectorLabels" -}}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/component: controlplane
{{- end -}}

{{/* The DNS names of the control plane's Service, shortest first. */}}
{{- define "sluice.cp.serviceNames" -}}
{{- $svc := include "sluice.cp.name" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.clusterDomain) | toJson -}}
{{- end -}}

{{/* host:port agents dial. */}}
{{- define "sluice.cp.address" -}}
{{- if .Values.controlPlane.enabled -}}
{{- printf "%s.%s.svc.%s:%d" (include "sluice.cp.name" .) .Release.Namespace .Values.clusterDomain (int .Values.controlPlane.grpcPort) -}}
{{- else -}}
{{- required "controlPlane.address is required when controlPlane.enabled is false (an agents-only install): the control plane's gRPC address host:port as the agents reach it" .Values.controlPlane.address -}}
{{- end -}}
{{- end -}}

{{/* Whether the chart makes the control plane's CA and certificate. */}}
{{- define "sluice.cp.chartTls" -}}
{{- if and .Values.controlPlane.enabled (not .Values.controlPlane.tls.existingSecret) -}}true{{- end -}}
{{- end -}}

{{/*
The volume holding the CA agents trust, as JSON: {"volume": {...}, "key": "ca.crt"}. Fails,
saying what to set, when there is none.
*/}}
{{- define "sluice.agent.caVolume" -}}
{{- $cp := .Values.controlPlane -}}
{{- if $cp.caCert -}}
{{- dict "name" "control-plane-ca" "configMap" (dict "name" (printf "%s-control-plane-ca" (include "sluice.fullname" .))) | toJson -}}
{{- else if $cp.caSecret -}}
{{- dict "name" "control-plane-ca" "secret" (dict "secretName" $cp.caSecret "items" (list (dict "key" "ca.crt" "path" "ca.crt"))) | toJson -}}
{{- else if include "sluice.cp.chartTls" . -}}
{{- dict "name" "control-plane-ca" "configMap" (dict "name" (printf "%s-control-plane-ca" (include "sluice.fullname" .))) | toJson -}}
{{- else if $cp.enabled -}}
{{- dict "name" "control-plane-ca" "secret" (dict "secretName" $cp.tls.existingSecret "items" (list (dict "key" "ca.crt" "path" "ca.crt"))) | toJson -}}
{{- else -}}
{{- fail "agents need the CA of the control plane's certificate: set controlPlane.caCert (its PEM) or controlPlane.caSecret (a Secret holding it under ca.crt)" -}}
{{- end -}}
{{- end -}}

{{/*
Merges map `src` into map `dst` key by key (maps recursively; any other value, false and 0
included, replaces dst's), returning JSON. (mergeOverwrite keeps dst's value where src's is
false, 0 or "".)
*/}}
{{- define "sluice.merge" -}}
{{- $dst := deepCopy (index . 0) -}}
{{- range $k, $v := index . 1 -}}
{{- if and (kindIs "map" $v) (kindIs "map" (get $dst $k)) -}}
{{- $_ := set $dst $k (fromJson (include "sluice.merge" (list (get $dst $k) $v))) -}}
{{- else -}}
{{- $_ := set $dst $k $v -}}
{{- end -}}
{{- end -}}
{{- toJson $dst -}}
{{- end -}}

{{/*
The agents as JSON: a list of agentDefaults merged with each entry, each with its derived names:
fullName (the StatefulSet and Service), headless (the governing Service), enrollSecret.
*/}}
{{- define "sluice.agents" -}}
{{- $out := list -}}
{{- $seen := dict -}}
{{- range $i, $entry := .Values.agents -}}
{{- if not $entry.name -}}
{{- fail (printf "agents[%d] has no name: every agent entry needs a name (a DNS label such as vpc-a)" $i) -}}
{{- end -}}
{{- if hasKey $seen $entry.name -}}
{{- fail (printf "agents[%d]: the name %q is used by another entry: agent names must be unique" $i $entry.name) -}}
{{- end -}}
{{- $_ := set $seen $entry.name true -}}
{{- $a := fromJson (include "sluice.merge" (list $.Values.agentDefaults $entry)) -}}
{{- $full := printf "%s-agent-%s" (include "sluice.fullname" $) $entry.name -}}
{{- if gt (len $full) 52 -}}
{{- fail (printf "agents[%d]: %q is longer than 52 characters (a StatefulSet's pods are named after it): shorten the agent's name or the release name (or set fullnameOverride)" $i $full) -}}
{{- end -}}
{{- $_ := set $a "fullName" $full -}}
{{- $_ := set $a "headless" (printf "%s-hl" $full) -}}
{{- $enroll := $entry.enrollment | default dict -}}
{{- if and $enroll.existingSecret $enroll.tokens -}}
{{- fail (printf "agents[%d] (%s): give enrollment.existingSecret or enrollment.tokens, not both" $i $entry.name) -}}
{{- else if $enroll.existingSecret -}}
{{- $_ := set $a "enrollSecret" $enroll.existingSecret -}}
{{- else if $enroll.tokens -}}
{{- if lt (len $enroll.tokens) (int $a.replicas) -}}
{{- fail (printf "agents[%d] (%s): enrollment.tokens has %d token(s) for %d replicas: each pod enrolls with a one-time token of its own" $i $entry.name (len $enroll.tokens) (int $a.replicas)) -}}
{{- end -}}
{{- $_ := set $a "enrollSecret" (printf "%s-enroll" $full) -}}
{{- else -}}
{{- fail (printf "agents[%d] (%s): set enrollment.existingSecret (a Secret with one key per pod, %s-0 ...) or enrollment.tokens: tokens come from `sluicectl agents enroll`" $i $entry.name $full) -}}
{{- end -}}
{{- $listening := false -}}
{{- range $proto, $l := $a.listeners -}}
{{- if $l.enabled -}}{{- $listening = true -}}{{- end -}}
{{- end -}}
{{- if not $listening -}}
{{- fail (printf "agents[%d] (%s): every listener is off: enable at least one of listeners.postgres, listeners.mysql, listeners.gcs" $i $entry.name) -}}
{{- end -}}
{{- if and $a.networkPolicy.enabled (not $a.networkPolicy.upstreams) -}}
{{- fail (printf "agents[%d] (%s): networkPolicy.upstreams is empty, so the agent could reach none of its databases: list their CIDRs and ports ([{cidr: 10.0.0.0/16, ports: [5432]}]) or set networkPolicy.enabled: false" $i $entry.name) -}}
{{- end -}}
{{- if and $a.networkPolicy.enabled (not $.Values.controlPlane.enabled) (not $.Values.networkPolicy.controlPlaneCidrs) -}}
{{- fail (printf "agents[%d] (%s): networkPolicy.controlPlaneCidrs is empty in an agents-only install, so the agent could not reach the control plane at %s: list the CIDRs its address resolves to, or set the agent's networkPolicy.enabled: false" $i $entry.name $.Values.controlPlane.address) -}}
{{- end -}}
{{- $out = append $out $a -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{- define "sluice.agent.selectorLabels" -}}
{{ include "sluice.selectorLabels" .root }}
app.kubernetes.io/component: agent
sluice.dev/agent: {{ .agent.name }}
{{- end -}}

{{/* The names the agent's listener certificate carries: its Service's, then tlsNames. */}}
{{- define "sluice.agent.tlsNames" -}}
{{- $svc := .agent.fullName -}}
{{- $ns := .root.Release.Namespace -}}
{{- $names := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .root.Values.clusterDomain) -}}
{{- concat $names (.agent.tlsNames | default list) | uniq | join "," -}}
{{- end -}}

{{/* A restricted container security context (Pod Security Standards, "restricted"). */}}
{{- define "sluice.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ int .Values.podSecurity.runAsUser }}
runAsGroup: {{ int .Values.podSecurity.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "sluice.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ int .Values.podSecurity.runAsUser }}
runAsGroup: {{ int .Values.podSecurity.runAsGroup }}
fsGroup: {{ int .Values.podSecurity.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "sluice.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}
