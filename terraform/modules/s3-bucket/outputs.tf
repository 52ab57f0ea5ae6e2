output "bucket_name" {
  description = "Name of the bucket."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "ARN of the bucket."
  value       = aws_s3_bucket.this.arn
}

output "kms_key_arn" {
  description = "ARN of the bucket's SSE-KMS key; readers and writers need kms:Decrypt / kms:GenerateDataKey on it."
  value       = aws_kms_key.this.arn
}
