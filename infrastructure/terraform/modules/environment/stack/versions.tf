terraform {
  # 1.10 brought S3-native state locking (use_lockfile).
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }

  # Partial configuration: bucket, key and region come from the environment catalog
  # (deployments/environments/ENV.yaml, terraform.backend) as -backend-config at init.
  backend "s3" {
    use_lockfile = true
    encrypt      = true
  }
}
