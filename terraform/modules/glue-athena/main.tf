# Glue catalog databases for the lake's tables and an Athena workgroup that can only write
# encrypted results to its own bucket.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

resource "aws_glue_catalog_database" "this" {
  for_each = var.databases

  name         = each.value
  description  = "svoe lake tables (one per channel, partitioned by exchange/symbol/date), written by feed pods."
  location_uri = "s3://${var.lake_bucket_name}/"
  tags         = var.tags
}

resource "aws_kms_key" "catalog" {
  count = var.manage_catalog_encryption ? 1 : 0

  description             = "${var.name_prefix} Glue Data Catalog metadata and connection passwords"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "DelegateToAccountIAM"
      Effect    = "Allow"
      Principal = { AWS = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root" }
      Action    = "kms:*"
      Resource  = "*"
    }]
  })
  tags = var.tags
}

resource "aws_kms_alias" "catalog" {
  count = var.manage_catalog_encryption ? 1 : 0

  name          = "alias/${var.name_prefix}/glue-catalog"
  target_key_id = aws_kms_key.catalog[0].key_id
}

resource "aws_glue_data_catalog_encryption_settings" "this" {
  count = var.manage_catalog_encryption ? 1 : 0

  data_catalog_encryption_settings {
    connection_password_encryption {
      return_connection_password_encrypted = true
      aws_kms_key_id                       = aws_kms_key.catalog[0].arn
    }
    encryption_at_rest {
      catalog_encryption_mode = "SSE-KMS"
      sse_aws_kms_key_id      = aws_kms_key.catalog[0].arn
    }
  }
}

module "results_bucket" {
  source = "../s3-bucket"

  name                               = var.results_bucket_name
  access_log_bucket                  = var.access_log_bucket
  transitions                        = []
  expiration_days                    = var.results_retention_days
  noncurrent_version_expiration_days = 1
  abort_incomplete_multipart_days    = 1
  tags                               = var.tags
}

resource "aws_athena_workgroup" "this" {
  name        = "${var.name_prefix}-lake"
  description = "Queries over the svoe lake."
  state       = "ENABLED"

  configuration {
    # Results stay in the encrypted bucket below even if a client asks for another location.
    enforce_workgroup_configuration    = true
    publish_cloudwatch_metrics_enabled = true
    bytes_scanned_cutoff_per_query     = var.bytes_scanned_cutoff_per_query

    engine_version {
      selected_engine_version = "Athena engine version 3"
    }

    result_configuration {
      output_location       = "s3://${module.results_bucket.bucket_name}/results/"
      expected_bucket_owner = data.aws_caller_identity.current.account_id

      encryption_configuration {
        encryption_option = "SSE_KMS"
        kms_key_arn       = module.results_bucket.kms_key_arn
      }
    }
  }

  tags = var.tags
}
