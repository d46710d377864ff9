# The provision flow stores these in the Prefect Variable infra-ENV (see the README); they are
# described in modules/environment/outputs.tf.

output "nodes" {
  value = module.environment.nodes
}

output "vpc_id" {
  value = module.environment.vpc_id
}

output "dns_zone_id" {
  value = module.environment.dns_zone_id
}

output "dns_zone" {
  value = module.environment.dns_zone
}

output "fqdn" {
  value = module.environment.fqdn
}

output "backup_bucket" {
  value = module.environment.backup_bucket
}

output "backup_writer" {
  value = module.environment.backup_writer
}
