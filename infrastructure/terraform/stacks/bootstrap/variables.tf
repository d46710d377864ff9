variable "state_bucket" {
  description = "Bucket of the environments' Terraform state (terraform.backend.bucket in the catalog)."
  type        = string
}

variable "region" {
  description = "AWS region of the state bucket."
  type        = string
}

variable "s3_use_path_style" {
  description = "Address buckets by path (S3-compatible emulators); false for AWS itself."
  type        = bool
  default     = false
}
