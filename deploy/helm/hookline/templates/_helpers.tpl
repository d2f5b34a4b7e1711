{{/* Names and labels. */}}
{{- define "hookline.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hookline.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one service: (dict "root" $ "component" "producer"). */}}
{{- define "hookline.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "hookline.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The environment every service shares: Kafka, the master key, logging. */}}
{{- define "hookline.env" -}}
- name: HOOKLINE_KAFKA_BROKERS
  value: {{ required "kafka.brokers is required" .Values.kafka.brokers | quote }}
- name: HOOKLINE_TOPIC_PREFIX
  value: {{ .Values.kafka.topicPrefix | quote }}
- name: HOOKLINE_TOPIC_PARTITIONS
  value: {{ .Values.kafka.topicPartitions | quote }}
- name: HOOKLINE_TOPIC_REPLICATION
  value: {{ .Values.kafka.topicReplication | quote }}
- name: HOOKLINE_KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- if .Values.kafka.sasl.mechanism }}
- name: HOOKLINE_KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: HOOKLINE_KAFKA_SASL_USERNAME
  value: {{ required "kafka.sasl.username is required with a SASL mechanism" .Values.kafka.sasl.username | quote }}
- name: HOOKLINE_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ required "kafka.sasl.passwordSecret.name is required with a SASL mechanism" .Values.kafka.sasl.passwordSecret.name }}
      key: {{ .Values.kafka.sasl.passwordSecret.key }}
{{- end }}
{{- if .Values.kafka.tls.caSecret }}
- name: HOOKLINE_KAFKA_SSL_CA_LOCATION
  value: /etc/hookline/kafka-ca/ca.crt
{{- end }}
{{- if .Values.kafka.tls.clientCertSecret }}
- name: HOOKLINE_KAFKA_SSL_CERTIFICATE_LOCATION
  value: /etc/hookline/kafka-client/tls.crt
- name: HOOKLINE_KAFKA_SSL_KEY_LOCATION
  value: /etc/hookline/kafka-client/tls.key
{{- end }}
- name: HOOKLINE_MASTER_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.name }}
      key: {{ .Values.secrets.masterKeyKey }}
{{- if .Values.secrets.previousMasterKeysKey }}
- name: HOOKLINE_MASTER_KEYS_PREVIOUS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.name }}
      key: {{ .Values.secrets.previousMasterKeysKey }}
{{- end }}
- name: HOOKLINE_ALLOWED_NETWORKS
  value: {{ .Values.allowedNetworks | quote }}
- name: HOOKLINE_ADMIN_ADDR
  value: "0.0.0.0:8081"
- name: HOOKLINE_LOG_FORMAT
  value: json
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
{{- if .Values.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.otlpEndpoint | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Volumes for the Kafka TLS files, and their mounts. */}}
{{- define "hookline.volumes" -}}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
{{- end }}
{{- if .Values.kafka.tls.clientCertSecret }}
- name: kafka-client
  secret:
    secretName: {{ .Values.kafka.tls.clientCertSecret }}
{{- end }}
{{- end -}}

{{- define "hookline.volumeMounts" -}}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/hookline/kafka-ca
  readOnly: true
{{- end }}
{{- if .Values.kafka.tls.clientCertSecret }}
- name: kafka-client
  mountPath: /etc/hookline/kafka-client
  readOnly: true
{{- end }}
{{- end -}}

{{/* One service's container: (dict "root" $ "component" "producer" "values" .Values.producer "command" "hookline-producer" "env" list). */}}
{{- define "hookline.container" -}}
- name: {{ .component }}
  image: {{ include "hookline.image" .root | quote }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  command: [{{ .command | quote }}]
  env:
    {{- include "hookline.env" .root | nindent 4 }}
    {{- with .env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with .values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: admin
      containerPort: 8081
    {{- if eq .component "producer" }}
    - name: api
      containerPort: 8080
    {{- end }}
  # The admin listener: /health/live answers while the process serves, /health/ready
  # once it reaches Kafka and its topics.
  livenessProbe:
    httpGet: {path: /health/live, port: admin}
    periodSeconds: 10
    failureThreshold: 6
  readinessProbe:
    httpGet: {path: /health/ready, port: admin}
    periodSeconds: 10
    failureThreshold: 3
  startupProbe:
    httpGet: {path: /health/live, port: admin}
    periodSeconds: 5
    failureThreshold: 24
  resources:
    {{- toYaml .values.resources | nindent 4 }}
  securityContext:
    {{- toYaml .root.Values.securityContext | nindent 4 }}
  {{- if or .root.Values.kafka.tls.caSecret .root.Values.kafka.tls.clientCertSecret }}
  volumeMounts:
    {{- include "hookline.volumeMounts" .root | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* The pod settings every service shares. */}}
{{- define "hookline.podSpec" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
# Longer than HOOKLINE_SHUTDOWN_TIMEOUT (30 s): in-flight work drains on SIGTERM.
terminationGracePeriodSeconds: 45
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if or .Values.kafka.tls.caSecret .Values.kafka.tls.clientCertSecret }}
volumes:
  {{- include "hookline.volumes" . | nindent 2 }}
{{- end }}
{{- end -}}
