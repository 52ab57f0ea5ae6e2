# Everything one svoe environment runs in its AWS account, wired from the modules next to this one.
# environments/<env> calls it once; only the backend, the provider and the per-environment values differ.

locals {
  name_prefix      = "svoe-${var.environment}"
  discovery_bucket = "${local.name_prefix}-oidc-${var.account_id}"
  # kops publishes each cluster's issuer at the HTTPS form of its discoveryStore
  # (s3://<discovery bucket>/<cluster>/discovery, kops/templates/cluster.yaml).
  oidc_issuers = [for c in var.kops_clusters : "${local.discovery_bucket}.s3.${var.region}.amazonaws.com/${c}/discovery"]
}

module "access_logs" {
  source = "../s3-access-logs"

  name           = "${local.name_prefix}-s3-access-logs-${var.account_id}"
  retention_days = 365
}

module "kops_state" {
  source = "../kops-state"

  state_bucket_name     = "${local.name_prefix}-kops-state-${var.account_id}"
  discovery_bucket_name = local.discovery_bucket
  access_log_bucket     = module.access_logs.bucket_name
}

module "data_lake" {
  source = "../data-lake"

  bucket_name                  = "${local.name_prefix}-lake-${var.account_id}"
  access_log_bucket            = module.access_logs.bucket_name
  feed_prefixes                = toset(keys(var.feeds))
  infrequent_access_after_days = 30
  glacier_ir_after_days        = var.lake_glacier_ir_after_days
}

# Thanos compacts and deletes blocks itself (retention flags of the compactor), so the bucket
# keeps everything in STANDARD and only expires superseded versions.
module "thanos_bucket" {
  source = "../s3-bucket"

  name                               = "${local.name_prefix}-thanos-${var.account_id}"
  access_log_bucket                  = module.access_logs.bucket_name
  noncurrent_version_expiration_days = var.thanos_noncurrent_version_expiration_days
}

module "glue_athena" {
  source = "../glue-athena"

  name_prefix                    = local.name_prefix
  databases                      = toset(flatten([for f in values(var.feeds) : tolist(f.glue_databases)]))
  lake_bucket_name               = module.data_lake.bucket_name
  results_bucket_name            = "${local.name_prefix}-athena-results-${var.account_id}"
  access_log_bucket              = module.access_logs.bucket_name
  results_retention_days         = var.athena_results_retention_days
  bytes_scanned_cutoff_per_query = var.athena_bytes_scanned_cutoff_per_query
}

module "irsa" {
  source = "../irsa"

  name_prefix              = local.name_prefix
  oidc_issuers             = local.oidc_issuers
  lake_bucket_arn          = module.data_lake.bucket_arn
  lake_kms_key_arn         = module.data_lake.kms_key_arn
  glue_catalog_kms_key_arn = module.glue_athena.catalog_kms_key_arn
  feeds = {
    for prefix, f in var.feeds : prefix => {
      namespace       = f.namespace
      service_account = f.service_account
      lake_prefix     = prefix
      glue_databases  = f.glue_databases
    }
  }
  thanos_bucket_arn  = module.thanos_bucket.bucket_arn
  thanos_kms_key_arn = module.thanos_bucket.kms_key_arn

  compaction_service_account = var.compaction_service_account
}

module "ecr" {
  source = "../ecr"

  name_prefix         = "svoe"
  repositories        = ["operator", "feedpod"]
  pull_principal_arns = var.ecr_pull_principal_arns
}
