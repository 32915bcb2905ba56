variable "role_name" {
  description = "Name of the IAM role the streammine pods assume."
  type        = string
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC identity provider (aws_iam_openid_connect_provider), the only principal allowed to assume the role."
  type        = string
}

variable "oidc_issuer_url" {
  description = "The cluster's OIDC issuer URL (with or without https://), used as the prefix of the :sub and :aud condition keys."
  type        = string
}

variable "namespace" {
  description = "Kubernetes namespace of the service account that may assume the role."
  type        = string
  default     = "streammine"
}

variable "service_account" {
  description = "Name of the Kubernetes service account that may assume the role (annotated with eks.amazonaws.com/role-arn)."
  type        = string
  default     = "streammine"
}

variable "bucket_arn" {
  description = "ARN of the streammine bucket (arn:aws:s3:::NAME). The role gets nothing outside it."
  type        = string

  validation {
    condition     = can(regex("^arn:[a-z-]+:s3:::[a-z0-9][a-z0-9.-]+$", var.bucket_arn))
    error_message = "bucket_arn must be a bucket ARN (arn:PARTITION:s3:::NAME), without a key part."
  }
}

variable "read_write_prefixes" {
  description = "Key prefixes the pods list, read, write and delete under (each ends with a slash): where the pipeline writes."
  type        = list(string)
  default     = ["models/", "embeddings/", "negatives/"]

  validation {
    condition     = alltrue([for p in var.read_write_prefixes : can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/$", p))])
    error_message = "Each prefix must be a non-empty relative key prefix ending with a slash, without wildcards (e.g. negatives/)."
  }
}

variable "read_only_prefixes" {
  description = "Key prefixes the pods may only list and read (each ends with a slash): the corpora and queries, uploaded by their owners with their own credentials."
  type        = list(string)
  default     = ["input/"]

  validation {
    condition     = alltrue([for p in var.read_only_prefixes : can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/$", p))])
    error_message = "Each prefix must be a non-empty relative key prefix ending with a slash, without wildcards (e.g. input/)."
  }
}

variable "kms_key_arn" {
  description = "ARN of the KMS key that encrypts the bucket; the role may use it only through S3 (kms:ViaService)."
  type        = string
}

variable "permissions_boundary_arn" {
  description = "ARN of an IAM permissions boundary for the role, where the organisation requires one; null for none."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}
