# What the provision flow passes, from the environment catalog (deployments/environments/ENV.yaml)
# through socialnet.auto.tfvars.json: see stack_variables in socialnet_ops/adapters/terraform.py. Only
# names and types here; meaning, defaults and checks are the module's
# (modules/environment/variables.tf). The optional ones default to null, which the module turns
# into its own default.

variable "environment" {
  type = string
}

variable "domain" {
  type = string
}

variable "dns_zone" {
  type = string
}

variable "node_count" {
  type    = number
  default = null
}

variable "node_size" {
  type    = string
  default = null
}

variable "node_image_id" {
  type    = string
  default = null
}

variable "vpc_cidr" {
  type    = string
  default = null
}

variable "admin_cidrs" {
  type    = list(string)
  default = null
}

variable "backup_bucket" {
  type    = string
  default = null
}

variable "backup_retention_days" {
  type    = number
  default = null
}

# The provider's own settings.

variable "region" {
  description = "AWS region of the environment."
  type        = string
}

variable "s3_use_path_style" {
  description = "Address buckets by path (S3-compatible emulators); false for AWS itself."
  type        = bool
  default     = false
}
