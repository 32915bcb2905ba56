# streammine on AWS: the bucket, an EKS cluster with a CPU and a GPU node group, and the IAM role (IRSA) of the
# streammine service account, limited to the bucket's project prefixes. The KubeRay operator goes on top with
# ../kuberay-operator (it needs the helm provider and a running cluster).

module "bucket" {
  source = "../modules/bucket"

  bucket_name                       = var.bucket_name
  model_version_retention_days      = var.model_version_retention_days
  negatives_retention_days          = var.negatives_retention_days
  noncurrent_version_retention_days = var.noncurrent_version_retention_days
  access_log_bucket                 = var.access_log_bucket
}

module "eks" {
  source = "../modules/eks"

  cluster_name           = var.name
  kubernetes_version     = var.kubernetes_version
  subnet_ids             = var.subnet_ids
  endpoint_public_access = var.endpoint_public_access
  public_access_cidrs    = var.public_access_cidrs
  admin_principal_arns   = var.admin_principal_arns
  cpu_instance_types     = var.cpu_instance_types
  cpu_node_count         = var.cpu_node_count
  gpu_instance_types     = var.gpu_instance_types
  gpu_node_count         = var.gpu_node_count
  gpu_capacity_type      = var.gpu_capacity_type
}

module "irsa" {
  source = "../modules/irsa-role"

  role_name         = "${var.name}-irsa-${var.k8s_service_account}"
  oidc_provider_arn = module.eks.oidc_provider_arn
  oidc_issuer_url   = module.eks.oidc_issuer_url
  namespace         = var.k8s_namespace
  service_account   = var.k8s_service_account

  bucket_arn  = module.bucket.bucket_arn
  kms_key_arn = module.bucket.kms_key_arn
  # the pipeline reads input/ and writes the rest
  read_only_prefixes = [module.bucket.prefixes.input]
  read_write_prefixes = [
    module.bucket.prefixes.models,
    module.bucket.prefixes.embeddings,
    module.bucket.prefixes.negatives,
  ]
}
