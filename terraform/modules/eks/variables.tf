variable "cluster_name" {
  description = "Name of the EKS cluster (also the prefix of its IAM roles, KMS alias and log group)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$", var.cluster_name))
    error_message = "cluster_name must be 1-100 letters, digits, hyphens and underscores, starting with a letter or digit."
  }
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of the control plane (and of the managed node groups' AMIs)."
  type        = string
  default     = "1.33"
}

variable "subnet_ids" {
  description = "IDs of the (private) subnets, in at least two availability zones, for the control plane's network interfaces and the nodes. They need a route to the internet (NAT) or VPC endpoints for ECR, S3, STS and EKS."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "EKS needs subnets in at least two availability zones."
  }
}

variable "endpoint_public_access" {
  description = "Whether the Kubernetes API endpoint is reachable from the internet (from public_access_cidrs only). false: reachable only from inside the VPC (a bastion, VPN or CI runner in the VPC)."
  type        = bool
  default     = false
}

variable "public_access_cidrs" {
  description = "CIDR blocks allowed to reach the public API endpoint when endpoint_public_access is true. Must not be empty or contain 0.0.0.0/0."
  type        = list(string)
  default     = []

  validation {
    condition     = !var.endpoint_public_access || (length(var.public_access_cidrs) > 0 && !contains(var.public_access_cidrs, "0.0.0.0/0"))
    error_message = "With endpoint_public_access = true, public_access_cidrs must list the allowed networks (0.0.0.0/0 is not accepted)."
  }
}

variable "cluster_log_types" {
  description = "Control-plane log types sent to CloudWatch Logs."
  type        = list(string)
  default     = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
}

variable "log_retention_days" {
  description = "Retention of the control-plane log group, in days (a CloudWatch Logs retention value)."
  type        = number
  default     = 365
}

variable "admin_principal_arns" {
  description = "IAM principals (roles, users) given cluster-admin through EKS access entries, besides the identity that creates the cluster."
  type        = list(string)
  default     = []
}

variable "cpu_instance_types" {
  description = "Instance types of the CPU node group (Ray head, system pods, CPU-only work)."
  type        = list(string)
  default     = ["m6i.2xlarge"]
}

variable "cpu_node_count" {
  description = "Minimum, desired and maximum size of the CPU node group."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 1, desired = 2, max = 4 }

  validation {
    condition     = var.cpu_node_count.min <= var.cpu_node_count.desired && var.cpu_node_count.desired <= var.cpu_node_count.max && var.cpu_node_count.max >= 1
    error_message = "cpu_node_count needs min <= desired <= max and max >= 1."
  }
}

variable "cpu_disk_size_gib" {
  description = "Root volume size of the CPU nodes, in GiB."
  type        = number
  default     = 50
}

variable "gpu_instance_types" {
  description = "Instance types of the GPU node group (encoder actors). One NVIDIA GPU per node by default (g5.2xlarge: 8 vCPU, 32 GiB, one A10G with 24 GB: what the k8s/ prod-gpu overlay sizes its Ray GPU workers for)."
  type        = list(string)
  default     = ["g5.2xlarge"]
}

variable "gpu_ami_type" {
  description = "EKS AMI type of the GPU node group: an accelerated AMI with the NVIDIA driver (AL2023_x86_64_NVIDIA, or BOTTLEROCKET_x86_64_NVIDIA)."
  type        = string
  default     = "AL2023_x86_64_NVIDIA"

  validation {
    condition     = contains(["AL2023_x86_64_NVIDIA", "AL2_x86_64_GPU", "BOTTLEROCKET_x86_64_NVIDIA"], var.gpu_ami_type)
    error_message = "gpu_ami_type must be an accelerated (NVIDIA) x86_64 AMI type."
  }
}

variable "gpu_capacity_type" {
  description = "ON_DEMAND or SPOT for the GPU node group. Mining survives the loss of a node (shards rebuild from the embedding store), so SPOT is an option."
  type        = string
  default     = "ON_DEMAND"

  validation {
    condition     = contains(["ON_DEMAND", "SPOT"], var.gpu_capacity_type)
    error_message = "gpu_capacity_type must be ON_DEMAND or SPOT."
  }
}

variable "gpu_node_count" {
  description = "Minimum, desired and maximum size of the GPU node group (min 0 lets an autoscaler remove every GPU node when idle)."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 0, desired = 1, max = 4 }

  validation {
    condition     = var.gpu_node_count.min <= var.gpu_node_count.desired && var.gpu_node_count.desired <= var.gpu_node_count.max && var.gpu_node_count.max >= 1
    error_message = "gpu_node_count needs min <= desired <= max and max >= 1."
  }
}

variable "gpu_disk_size_gib" {
  description = "Root volume size of the GPU nodes, in GiB (CUDA images are large)."
  type        = number
  default     = 100
}

variable "oidc_thumbprints" {
  description = "Server certificate thumbprints of the cluster's OIDC issuer. IAM no longer uses them for EKS issuers (it trusts its own CA store), but the API still wants one; the default is the root CA of the EKS OIDC endpoints. Computing it would need the tls provider."
  type        = list(string)
  default     = ["9e99a48a9960b14926bb7f3b02e22da2b0ab7280"]
}

variable "kms_deletion_window_days" {
  description = "Waiting period (7-30 days) before the cluster's KMS key (Kubernetes secrets, control-plane logs) is deleted after a destroy."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}
