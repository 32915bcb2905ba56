output "cluster_name" {
  description = "Name of the EKS cluster."
  value       = aws_eks_cluster.this.name
}

output "cluster_arn" {
  description = "ARN of the EKS cluster."
  value       = aws_eks_cluster.this.arn
}

output "cluster_endpoint" {
  description = "URL of the Kubernetes API server."
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_certificate_authority_data" {
  description = "Base64-encoded CA certificate of the API server (for kubeconfig or the helm/kubernetes providers)."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "oidc_issuer_url" {
  description = "The cluster's OIDC issuer URL (https://...), the prefix of IRSA trust-policy condition keys."
  value       = aws_eks_cluster.this.identity[0].oidc[0].issuer
}

output "oidc_provider_arn" {
  description = "ARN of the IAM OIDC identity provider of the cluster (the Federated principal of IRSA roles)."
  value       = aws_iam_openid_connect_provider.this.arn
}

output "kms_key_arn" {
  description = "ARN of the KMS key that encrypts Kubernetes secrets and the control-plane log group."
  value       = aws_kms_key.cluster.arn
}

output "node_role_arn" {
  description = "ARN of the IAM role of both node groups."
  value       = aws_iam_role.node.arn
}

output "node_groups" {
  description = "Node group name by pool (cpu, gpu)."
  value = {
    cpu = aws_eks_node_group.cpu.node_group_name
    gpu = aws_eks_node_group.gpu.node_group_name
  }
}

output "gpu_taint" {
  description = "The taint of the GPU nodes in Kubernetes terms (key, value, effect); GPU pods need a matching toleration."
  value       = { key = local.gpu_taint.key, value = local.gpu_taint.value, effect = "NoSchedule" }
}
