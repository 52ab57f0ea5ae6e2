provider "aws" {
  region = var.region
  # A plan against the wrong account's credentials fails before it reads anything.
  allowed_account_ids = [var.account_id]

  default_tags {
    tags = {
      project     = "svoe"
      environment = var.environment
      managed-by  = "terraform"
    }
  }
}
