variable "name" {
  description = "Prefix of the names, e.g. socialnet-staging."
  type        = string
}

variable "bucket_arn" {
  description = "ARN of the backup bucket the writer may use."
  type        = string
}

variable "prefix" {
  description = "Key prefix the writer is limited to, without a leading slash."
  type        = string
  default     = "postgres/"

  validation {
    condition     = !startswith(var.prefix, "/") && endswith(var.prefix, "/")
    error_message = "prefix must not start with '/' and must end with '/', e.g. postgres/."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
