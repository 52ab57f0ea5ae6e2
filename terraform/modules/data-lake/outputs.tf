output "bucket_name" {
  description = "Name of the lake bucket."
  value       = module.bucket.bucket_name
}

output "bucket_arn" {
  description = "ARN of the lake bucket."
  value       = module.bucket.bucket_arn
}

output "kms_key_arn" {
  description = "ARN of the lake's SSE-KMS key."
  value       = module.bucket.kms_key_arn
}

output "lake_urls" {
  description = "spec.storage.lake of the DataFeeds of each prefix, keyed by prefix."
  value       = { for p in var.feed_prefixes : p => "s3://${module.bucket.bucket_name}/${p}" }
}
