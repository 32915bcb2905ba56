output "role_arn" {
  description = "ARN of the role; annotate the service account with eks.amazonaws.com/role-arn = this value."
  value       = aws_iam_role.this.arn
}

output "role_name" {
  description = "Name of the role."
  value       = aws_iam_role.this.name
}

output "policy_json" {
  description = "The access policy document (JSON) attached to the role, for review."
  value       = data.aws_iam_policy_document.access.json
}

output "assume_role_policy_json" {
  description = "The trust policy document (JSON): who may assume the role, for review."
  value       = data.aws_iam_policy_document.assume.json
}

output "service_account_annotations" {
  description = "Annotations to put on the Kubernetes service account so that its pods get the role's credentials."
  value       = { "eks.amazonaws.com/role-arn" = aws_iam_role.this.arn }
}
