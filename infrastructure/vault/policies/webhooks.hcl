# Policy webhooks-{{environment}}: the GitLab webhook receiver (AppRole webhooks-{{environment}}).
# Reads the shared webhook token of its own environment; writes nothing.
path "{{mount}}/data/{{environment}}/webhooks" {
  capabilities = ["read"]
}
