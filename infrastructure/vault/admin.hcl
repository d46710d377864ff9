# Policy socialnet-secrets-admin: what `socialnet-ops secrets` needs to bootstrap an environment
# on a shared Vault (the local OpenBao dev server uses its root token instead). Give it to an
# operator token, never to the flows: the flows run with their own flows-<env> AppRole.
path "sys/mounts" {
  capabilities = ["read"]
}

path "sys/mounts/socialnet" {
  capabilities = ["create", "read", "update"]
}

path "sys/auth" {
  capabilities = ["read"]
}

path "sys/auth/approle" {
  capabilities = ["create", "read", "update", "sudo"]
}

path "sys/policies/acl/flows-*" {
  capabilities = ["create", "read", "update"]
}

path "sys/policies/acl/api-*" {
  capabilities = ["create", "read", "update"]
}

path "sys/policies/acl/webhooks-*" {
  capabilities = ["create", "read", "update"]
}

path "auth/approle/role/*" {
  capabilities = ["create", "read", "update"]
}

# Missing secrets are created with the flows' own role; the admin only fills the layout.
