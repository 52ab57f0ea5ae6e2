# The stack's outputs, unchanged; descriptions in modules/svoe-stack/outputs.tf.
output "lake_urls" { value = module.stack.lake_urls }
output "glue_databases" { value = module.stack.glue_databases }
output "athena_workgroup" { value = module.stack.athena_workgroup }
output "feed_role_arns" { value = module.stack.feed_role_arns }
output "thanos_role_arn" { value = module.stack.thanos_role_arn }
output "thanos_bucket" { value = module.stack.thanos_bucket }
output "ecr_repository_urls" { value = module.stack.ecr_repository_urls }
output "kops_state_store" { value = module.stack.kops_state_store }
output "oidc_issuers" { value = module.stack.oidc_issuers }
