# Only the region is code. Credentials, and the endpoint when it is not AWS itself (the local
# emulator), come from the environment: AWS_PROFILE / AWS_ACCESS_KEY_ID..., AWS_ENDPOINT_URL.
provider "aws" {
  region            = var.region
  s3_use_path_style = var.s3_use_path_style

  default_tags {
    tags = local.tags
  }
}
