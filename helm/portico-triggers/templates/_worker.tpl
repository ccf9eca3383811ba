{{/*
One worker's settings: `workerDefaults` overridden by `workers.<name>`, as YAML (use with fromYaml):
`include "portico-triggers.worker" (list $ $name $overrides)`. Helm's merge skips false, 0 and ""
in the overrides, so the keys where those are meaningful (replicas: 0, a PDB turned off) are
copied explicitly.
*/}}
{{- define "portico-triggers.worker" -}}
{{- $root := index . 0 }}
{{- $overrides := default (dict) (index . 2) }}
{{- $w := mergeOverwrite (deepCopy $root.Values.workerDefaults) (deepCopy $overrides) }}
{{- if hasKey $overrides "replicas" }}
{{- $_ := set $w "replicas" $overrides.replicas }}
{{- end }}
{{- $pdb := default (dict) $overrides.podDisruptionBudget }}
{{- if hasKey $pdb "enabled" }}
{{- $_ := set $w.podDisruptionBudget "enabled" $pdb.enabled }}
{{- end }}
{{- toYaml $w }}
{{- end }}

{{- define "portico-triggers.workerName" -}}
{{- printf "%s-worker-%s" (include "portico-triggers.fullname" (index . 0)) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}
