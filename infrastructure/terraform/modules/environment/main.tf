locals {
  name = "socialnet-${var.environment}"
}

module "network" {
  source = "../network"

  name        = local.name
  cidr_block  = var.vpc_cidr
  admin_cidrs = var.admin_cidrs
}

module "nodes" {
  source = "../nodes"

  name               = local.name
  node_count         = var.node_count
  node_size          = var.node_size
  image_id           = var.node_image_id
  subnet_ids         = module.network.subnet_ids
  security_group_ids = [module.network.security_group_id]
}

module "dns" {
  source = "../dns"

  zone_name   = var.dns_zone
  create_zone = var.create_zone
  record_name = var.domain
  addresses   = [for node in module.nodes.nodes : node.public_ip != "" ? node.public_ip : node.private_ip]
}

module "backups" {
  source = "../storage"
  count  = var.backup_bucket == null ? 0 : 1

  bucket            = var.backup_bucket
  expire_after_days = var.backup_retention_days
}

module "backup_writer" {
  source = "../iam"
  count  = var.backup_bucket == null ? 0 : 1

  name       = local.name
  bucket_arn = module.backups[0].arn
}
