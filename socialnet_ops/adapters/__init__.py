"""One client per tool (Terraform, Vault, PostgreSQL, S3, git builds, GitLab, nodes, processes).
No Prefect: the tasks wrap them."""
