output "bucket_name" {
  description = "Name of the access-log bucket; pass it as access_log_bucket to the other bucket modules."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "ARN of the access-log bucket."
  value       = aws_s3_bucket.this.arn
}
