# Policy api-{{environment}}: the API of environment {{environment}} (AppRole api-{{environment}}).
# Reads the database login and the token signing keys of its own environment; writes nothing.
path "{{mount}}/data/{{environment}}/database" {
  capabilities = ["read"]
}

path "{{mount}}/data/{{environment}}/api" {
  capabilities = ["read"]
}
