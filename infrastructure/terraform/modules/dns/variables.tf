variable "zone_name" {
  description = "The primary zone, e.g. socialnet.example."
  type        = string
}

variable "create_zone" {
  description = "Create the zone (the environment at the apex owns it) or look up an existing one."
  type        = bool
  default     = false
}

variable "record_name" {
  description = "The environment's name: the zone apex for production, a subdomain otherwise."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9-]+\\.)*[a-z0-9-]+\\.?$", var.record_name))
    error_message = "record_name must be a DNS name such as staging.socialnet.example."
  }
}

variable "addresses" {
  description = "IPv4 addresses the environment's name points at."
  type        = list(string)

  validation {
    condition     = length(var.addresses) > 0
    error_message = "addresses needs at least one address."
  }
}

variable "ttl" {
  description = "Time to live of the records, in seconds."
  type        = number
  default     = 60
}

variable "tags" {
  description = "Tags of the zone when it is created."
  type        = map(string)
  default     = {}
}
