output "database_names" {
  description = "Names of the Glue databases."
  value       = sort([for d in aws_glue_catalog_database.this : d.name])
}

output "workgroup_name" {
  description = "Athena workgroup to run lake queries in."
  value       = aws_athena_workgroup.this.name
}

output "results_bucket_name" {
  description = "Bucket of Athena query results."
  value       = module.results_bucket.bucket_name
}

output "results_kms_key_arn" {
  description = "KMS key of the Athena results bucket."
  value       = module.results_bucket.kms_key_arn
}

output "catalog_kms_key_arn" {
  description = "KMS key of the Glue Data Catalog, or null when manage_catalog_encryption is false. Catalog writers need kms:Decrypt/kms:Encrypt/kms:GenerateDataKey on it."
  value       = var.manage_catalog_encryption ? aws_kms_key.catalog[0].arn : null
}
