output "lake_urls" {
  description = "spec.storage.lake per feed group."
  value       = module.data_lake.lake_urls
}

output "glue_databases" {
  description = "Glue databases (spec.storage.glueDatabase)."
  value       = module.glue_athena.database_names
}

output "athena_workgroup" {
  description = "Athena workgroup for lake queries."
  value       = module.glue_athena.workgroup_name
}

output "feed_role_arns" {
  description = "eks.amazonaws.com/role-arn of the feed ServiceAccount, per feed group."
  value       = module.irsa.feed_role_arns
}

output "thanos_role_arn" {
  description = "eks.amazonaws.com/role-arn of the Prometheus and thanos-storage ServiceAccounts (thanos/values/<env>.yaml)."
  value       = module.irsa.thanos_role_arn
}

output "compaction_role_arn" {
  description = "eks.amazonaws.com/role-arn of the lake compaction ServiceAccount (charts/svoe compaction.serviceAccount.roleArn), or null."
  value       = module.irsa.compaction_role_arn
}

output "thanos_bucket" {
  description = "Bucket of the Thanos objstore config (thanos/values/<env>.yaml)."
  value       = module.thanos_bucket.bucket_name
}

output "ecr_repository_urls" {
  description = "Image repositories of the operator and feedpod targets."
  value       = module.ecr.repository_urls
}

output "kops_state_store" {
  description = "KOPS_STATE_STORE."
  value       = module.kops_state.state_store
}

output "oidc_issuers" {
  description = "Service-account issuers trusted by the IRSA roles, one per kops cluster."
  value       = local.oidc_issuers
}
