output "state_store" {
  description = "KOPS_STATE_STORE value."
  value       = "s3://${module.state.bucket_name}"
}

output "state_kms_key_arn" {
  description = "KMS key of the state store; kops nodes decrypt their bootstrap config with it."
  value       = module.state.kms_key_arn
}

output "discovery_bucket_name" {
  description = "Bucket of the OIDC discovery documents."
  value       = aws_s3_bucket.discovery.id
}

output "discovery_bucket_regional_domain" {
  description = "Host part of every cluster's service-account issuer: https://<this>/<cluster>/discovery."
  value       = aws_s3_bucket.discovery.bucket_regional_domain_name
}
