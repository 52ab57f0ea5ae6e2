output "repository_urls" {
  description = "Repository URL per Dockerfile target, e.g. {operator = \"<acct>.dkr.ecr.<region>.amazonaws.com/svoe/operator\"}."
  value       = { for k, r in aws_ecr_repository.this : k => r.repository_url }
}

output "repository_arns" {
  description = "Repository ARN per Dockerfile target."
  value       = { for k, r in aws_ecr_repository.this : k => r.arn }
}

output "kms_key_arn" {
  description = "KMS key encrypting the images."
  value       = aws_kms_key.this.arn
}
