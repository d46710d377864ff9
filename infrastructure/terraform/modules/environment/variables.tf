# Optional inputs are not nullable: a caller passing null (a stack variable the catalog leaves
# unset) gets the default below.

variable "environment" {
  description = "The environment's name in the catalog; names are socialnet-<environment>."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}$", var.environment))
    error_message = "environment must be lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "domain" {
  description = "The environment's DNS name: the zone apex for production, a subdomain otherwise."
  type        = string
}

variable "dns_zone" {
  description = "The primary zone holding the environment's records."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9-]+\\.)+[a-z]{2,}$", var.dns_zone))
    error_message = "dns_zone must be a domain name such as socialnet.example."
  }
}

variable "create_zone" {
  description = "Create the zone (this environment owns it) or look it up (its owner applies first)."
  type        = bool
  default     = false
  nullable    = false
}

variable "node_count" {
  description = "Cluster nodes: the first is the control plane, the others workers."
  type        = number
  default     = 2
  nullable    = false
}

variable "node_size" {
  description = "EC2 instance type of the nodes."
  type        = string
  default     = "t3.medium"
  nullable    = false
}

variable "node_image_id" {
  description = "AMI of the nodes; null looks up the newest Ubuntu server image."
  type        = string
  default     = null
}

variable "vpc_cidr" {
  description = "Address range of the environment's VPC."
  type        = string
  default     = "10.20.0.0/16"
  nullable    = false
}

variable "admin_cidrs" {
  description = "Addresses allowed to reach SSH and the Kubernetes API of the nodes."
  type        = list(string)
  default     = []
  nullable    = false
}

variable "backup_bucket" {
  description = "Bucket of the PostgreSQL backups; null when the environment is not backed up."
  type        = string
  default     = null
}

variable "backup_retention_days" {
  description = "Age after which backups expire (the longest of the catalog's retention tiers)."
  type        = number
  default     = 400
  nullable    = false
}
