terraform {
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
  }

  # The state bucket is bootstrapped once per account (terraform/README.md); S3-native locking
  # (use_lockfile, Terraform >= 1.10) replaces the DynamoDB lock table.
  backend "s3" {
    bucket       = "svoe-prod-tfstate-444455556666"
    key          = "svoe/prod/terraform.tfstate"
    region       = "eu-west-1"
    encrypt      = true
    use_lockfile = true
  }
}
