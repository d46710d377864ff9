terraform {
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }

  # Local state on purpose: this stack creates the bucket every other stack keeps its state in.
  # The path is given at init (-backend-config=path=...); keep that file safe.
  backend "local" {}
}
