output "user_name" {
  description = "The backup writer's IAM user."
  value       = aws_iam_user.backup_writer.name
}

output "policy_arn" {
  description = "ARN of the least-privilege backup policy."
  value       = aws_iam_policy.backup_writer.arn
}
