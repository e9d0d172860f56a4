{{/* What NOTES.txt prints after install and upgrade: where the CA and the admin token are, and
the exact enrollment commands per agent pod. A named template, so that tests can render it
(`helm template` does not render NOTES.txt). */}}
{{- define "sluice.notes" -}}
{{- $agents := fromJsonArray (include "sluice.agents" .) -}}
{{- if .Values.controlPlane.enabled }}
The control plane: StatefulSet {{ include "sluice.cp.name" . }}, gRPC (TLS) at
{{ include "sluice.cp.address" . }}.

sluicectl needs the CA and the admin token:
{{- if include "sluice.cp.chartTls" . }}
  kubectl -n {{ .Release.Namespace }} get configmap {{ include "sluice.fullname" . }}-control-plane-ca -o jsonpath='{.data.ca\.crt}' > sluice-ca.crt
{{- else }}
  the ca.crt of Secret {{ .Values.controlPlane.tls.existingSecret }}
{{- end }}
{{- if .Values.controlPlane.adminToken.existingSecret }}
  kubectl -n {{ .Release.Namespace }} get secret {{ .Values.controlPlane.adminToken.existingSecret }} -o jsonpath='{.data.admin\.token}' | base64 -d > admin.token
{{- else if .Values.controlPlane.adminToken.value }}
  kubectl -n {{ .Release.Namespace }} get secret {{ include "sluice.cp.name" . }}-keys -o jsonpath='{.data.admin\.token}' | base64 -d > admin.token
{{- else }}
  kubectl -n {{ .Release.Namespace }} exec {{ include "sluice.cp.name" . }}-0 -- cat /var/lib/sluice/admin.token > admin.token
{{- end }}
{{- end }}
{{- range $a := $agents }}

Agent {{ $a.name }}: each pod enrolls once with its own token, the key named after the pod in
Secret {{ $a.enrollSecret }}. Mint them with:
{{- range $i := until (int $a.replicas) }}
  sluicectl agents enroll --name {{ $a.fullName }}-{{ $i }} --labels {{ $labels := list }}{{ range $k, $v := $a.labels }}{{ $labels = append $labels (printf "%s=%s" $k $v) }}{{ end }}{{ join "," $labels }} --tls-names {{ include "sluice.agent.tlsNames" (dict "root" $ "agent" $a) }}
{{- end }}
{{- if not $a.enrollment.tokens }}
and store them:
  kubectl -n {{ $.Release.Namespace }} create secret generic {{ $a.enrollSecret }}{{ range $i := until (int $a.replicas) }} --from-literal={{ $a.fullName }}-{{ $i }}=TOKEN{{ $i }}{{ end }}
{{- end }}
Clients reach its listeners at {{ $a.fullName }}.{{ $.Release.Namespace }}.svc.{{ $.Values.clusterDomain }}.
{{- end }}
{{- end -}}
