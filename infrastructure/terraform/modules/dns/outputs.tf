output "zone_id" {
  description = "Id of the primary zone."
  value       = local.zone_id
}

output "zone_name" {
  description = "Name of the primary zone."
  value       = var.zone_name
}

output "fqdn" {
  description = "The environment's name as served."
  value       = aws_route53_record.environment.fqdn
}

output "name_servers" {
  description = "Name servers of the zone when this module created it (delegate the domain to them)."
  value       = var.create_zone ? aws_route53_zone.primary[0].name_servers : []
}
