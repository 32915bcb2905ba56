variable "region" {
  description = "AWS region of the bucket and the cluster (keep them together: cross-region traffic is slow and billed)."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Name of the deployment: the EKS cluster name and the prefix of IAM role names."
  type        = string
  default     = "streammine"
}

variable "bucket_name" {
  description = "Name of the streammine bucket (globally unique), e.g. acme-streammine-prod."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnet IDs, in at least two availability zones, of an existing VPC with NAT (or VPC endpoints for ECR, S3, STS, EKS): where the control plane's interfaces and the nodes live."
  type        = list(string)
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of the cluster and its node groups."
  type        = string
  default     = "1.33"
}

variable "endpoint_public_access" {
  description = "Whether the Kubernetes API is reachable from the internet (from public_access_cidrs only). Default false: only from inside the VPC."
  type        = bool
  default     = false
}

variable "public_access_cidrs" {
  description = "CIDR blocks allowed to reach the public API endpoint when endpoint_public_access is true (0.0.0.0/0 is refused)."
  type        = list(string)
  default     = []
}

variable "admin_principal_arns" {
  description = "IAM roles or users given cluster-admin on the cluster, besides the identity that runs terraform apply."
  type        = list(string)
  default     = []
}

variable "cpu_instance_types" {
  description = "Instance types of the CPU node group."
  type        = list(string)
  default     = ["m6i.2xlarge"]
}

variable "cpu_node_count" {
  description = "Minimum, desired and maximum number of CPU nodes."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 1, desired = 2, max = 4 }
}

variable "gpu_instance_types" {
  description = "Instance types of the GPU node group (one NVIDIA GPU per node suits one encoder actor per node)."
  type        = list(string)
  default     = ["g5.2xlarge"]
}

variable "gpu_node_count" {
  description = "Minimum, desired and maximum number of GPU nodes."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 0, desired = 1, max = 4 }
}

variable "gpu_capacity_type" {
  description = "ON_DEMAND or SPOT for the GPU nodes."
  type        = string
  default     = "ON_DEMAND"
}

variable "model_version_retention_days" {
  description = "Days after which objects under models/ and embeddings/ expire (old model versions and their embedding stores); null keeps them."
  type        = number
  default     = 180
}

variable "negatives_retention_days" {
  description = "Days after which objects under negatives/ (mining outputs) expire; null keeps them."
  type        = number
  default     = 60
}

variable "noncurrent_version_retention_days" {
  description = "Days an overwritten or deleted object version stays recoverable."
  type        = number
  default     = 14
}

variable "access_log_bucket" {
  description = "Existing bucket that receives S3 server access logs of the streammine bucket; null for none."
  type        = string
  default     = null
}

variable "k8s_namespace" {
  description = "Kubernetes namespace of the streammine service account (the k8s/ manifests use streammine)."
  type        = string
  default     = "streammine"
}

variable "k8s_service_account" {
  description = "Name of the Kubernetes service account whose pods get the bucket role (the k8s/ manifests use streammine)."
  type        = string
  default     = "streammine"
}

variable "tags" {
  description = "Tags added to every resource (merged into the provider's default tags)."
  type        = map(string)
  default     = {}
}
