# Everything of this environment comes from modules/svoe-stack; only the values below, the
# backend (versions.tf), the provider (providers.tf) and terraform.tfvars are specific to dev.
module "stack" {
  source = "../../modules/svoe-stack"

  environment             = var.environment
  account_id              = var.account_id
  region                  = var.region
  kops_clusters           = var.kops_clusters
  feeds                   = var.feeds
  ecr_pull_principal_arns = var.ecr_pull_principal_arns

  lake_glacier_ir_after_days                = 90
  thanos_noncurrent_version_expiration_days = 7
  athena_results_retention_days             = 7
  athena_bytes_scanned_cutoff_per_query     = 10737418240 # 10 GiB
}
