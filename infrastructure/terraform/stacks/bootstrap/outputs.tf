output "state_bucket" {
  description = "Bucket holding the environments' state."
  value       = module.state_bucket.bucket
}
