output "feed_role_arns" {
  description = "Role ARN per feed group; annotate the feed ServiceAccount with eks.amazonaws.com/role-arn set to it."
  value       = { for k, r in aws_iam_role.feed : k => r.arn }
}

output "thanos_role_arn" {
  description = "Role ARN for the Thanos ServiceAccounts (thanos/values/<env>.yaml: serviceAccount.roleArn)."
  value       = aws_iam_role.thanos.arn
}

output "compaction_role_arn" {
  description = "Role ARN of the lake compaction ServiceAccount (charts/svoe compaction.serviceAccount.roleArn), or null when compaction_service_account is null."
  value       = one(aws_iam_role.compaction[*].arn)
}
