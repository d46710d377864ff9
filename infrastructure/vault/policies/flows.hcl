# Policy flows-{{environment}}: the Prefect flows of environment {{environment}} (AppRole {{role}}).
# They create missing secrets, rotate them and hand them to the platform: create, read and
# update their own environment's secrets, nothing else (no delete, no other environment).
path "{{mount}}/data/{{environment}}/*" {
  capabilities = ["create", "read", "update"]
}

path "{{mount}}/metadata/{{environment}}/*" {
  capabilities = ["read", "list"]
}
