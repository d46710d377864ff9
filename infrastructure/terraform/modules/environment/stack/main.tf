# Paths are relative to the stack this file is linked into (stacks/ENV/).
locals {
  tags = {
    Project     = "socialnet"
    Environment = var.environment
    ManagedBy   = "terraform"
  }
}

module "environment" {
  source = "../../modules/environment"

  environment           = var.environment
  domain                = var.domain
  dns_zone              = var.dns_zone
  create_zone           = local.create_zone # the stack's own choice, in its environment.tf
  node_count            = var.node_count
  node_size             = var.node_size
  node_image_id         = var.node_image_id
  vpc_cidr              = var.vpc_cidr
  admin_cidrs           = var.admin_cidrs
  backup_bucket         = var.backup_bucket
  backup_retention_days = var.backup_retention_days
}
