resource "aws_route53_zone" "primary" {
  count = var.create_zone ? 1 : 0

  name    = var.zone_name
  comment = "Primary zone of socialnet"
  tags    = var.tags
}

data "aws_route53_zone" "primary" {
  count = var.create_zone ? 0 : 1

  name         = var.zone_name
  private_zone = false
}

locals {
  zone_id = var.create_zone ? aws_route53_zone.primary[0].zone_id : data.aws_route53_zone.primary[0].zone_id
}

resource "aws_route53_record" "environment" {
  zone_id = local.zone_id
  name    = var.record_name
  type    = "A"
  ttl     = var.ttl
  records = var.addresses
}
