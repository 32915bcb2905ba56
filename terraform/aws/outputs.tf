output "bucket_name" {
  description = "Name of the streammine bucket."
  value       = module.bucket.bucket_name
}

output "bucket_arn" {
  description = "ARN of the streammine bucket."
  value       = module.bucket.bucket_arn
}

output "bucket_kms_key_arn" {
  description = "ARN of the KMS key that encrypts the bucket."
  value       = module.bucket.kms_key_arn
}

output "s3_urls" {
  description = "s3:// URL of each prefix, by name (input, models, embeddings, negatives): what goes into --input / --output and job configs."
  value       = { for name, prefix in module.bucket.prefixes : name => "s3://${module.bucket.bucket_name}/${prefix}" }
}

output "cluster_name" {
  description = "Name of the EKS cluster (the input of ../kuberay-operator)."
  value       = module.eks.cluster_name
}

output "cluster_endpoint" {
  description = "URL of the Kubernetes API server."
  value       = module.eks.cluster_endpoint
}

output "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider (for further IRSA roles)."
  value       = module.eks.oidc_provider_arn
}

output "gpu_taint" {
  description = "Taint of the GPU nodes (key, value, effect): Ray GPU worker pods need a matching toleration."
  value       = module.eks.gpu_taint
}

output "service_account_role_arn" {
  description = "ARN of the IAM role of the streammine service account."
  value       = module.irsa.role_arn
}

output "service_account_annotations" {
  description = "Annotations for the streammine service account (k8s/): eks.amazonaws.com/role-arn."
  value       = module.irsa.service_account_annotations
}

output "kubeconfig_command" {
  description = "Command that writes a kubeconfig entry for the cluster."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${module.eks.cluster_name}"
}
