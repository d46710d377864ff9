# The state bucket: versioned (every state write can be recovered), encrypted, never public.
# State history is kept: no expiration rule.
module "state_bucket" {
  source = "../../modules/storage"

  bucket = var.state_bucket
}
