variable "bucket" {
  description = "Name of the bucket (globally unique on AWS)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket))
    error_message = "bucket must be 3-63 lowercase letters, digits, dots or dashes."
  }
}

variable "expire_after_days" {
  description = "Delete current objects after this many days; null keeps them (no lifecycle rule)."
  type        = number
  default     = null

  validation {
    condition     = var.expire_after_days == null || try(var.expire_after_days >= 1, false)
    error_message = "expire_after_days must be null or at least 1."
  }
}

variable "noncurrent_days" {
  description = "Delete overwritten or deleted versions after this many days (with expire_after_days)."
  type        = number
  default     = 30
}

variable "kms_key_arn" {
  description = "KMS key for server-side encryption; null uses S3-managed keys (AES256)."
  type        = string
  default     = null
}

variable "force_destroy" {
  description = "Allow destroying the bucket with objects in it (never for state or production backups)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags of the bucket."
  type        = map(string)
  default     = {}
}
