output "nodes" {
  description = "Cluster nodes for Ansible: name, role, private_ip, public_ip."
  value       = module.nodes.nodes
}

output "vpc_id" {
  description = "The environment's VPC."
  value       = module.network.vpc_id
}

output "dns_zone_id" {
  description = "Id of the primary zone."
  value       = module.dns.zone_id
}

output "dns_zone" {
  description = "Name of the primary zone."
  value       = module.dns.zone_name
}

output "fqdn" {
  description = "The environment's DNS name."
  value       = module.dns.fqdn
}

output "backup_bucket" {
  description = "Bucket of the PostgreSQL backups (null when not backed up)."
  value       = var.backup_bucket == null ? null : module.backups[0].bucket
}

output "backup_writer" {
  description = "IAM user and policy of the backup job (null when not backed up)."
  value = var.backup_bucket == null ? null : {
    user_name  = module.backup_writer[0].user_name
    policy_arn = module.backup_writer[0].policy_arn
  }
}
