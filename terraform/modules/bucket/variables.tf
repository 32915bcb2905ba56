variable "bucket_name" {
  description = "Name of the S3 bucket that holds everything streammine reads and writes (input/, models/, embeddings/, negatives/). Globally unique."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be 3-63 characters of lower-case letters, digits, dots and hyphens, starting and ending with a letter or digit."
  }
}

variable "model_version_retention_days" {
  description = "Days after which objects under models/ (checkpoints by model version) and embeddings/ (the embedding store by model version) expire. An object that is rewritten starts counting again, so only versions nobody rewrote for this long go. null keeps them forever."
  type        = number
  default     = 180

  validation {
    condition     = var.model_version_retention_days == null ? true : var.model_version_retention_days >= 1
    error_message = "model_version_retention_days must be null or at least 1."
  }
}

variable "negatives_retention_days" {
  description = "Days after which objects under negatives/ (mining outputs) expire. null keeps them forever."
  type        = number
  default     = 60

  validation {
    condition     = var.negatives_retention_days == null ? true : var.negatives_retention_days >= 1
    error_message = "negatives_retention_days must be null or at least 1."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days a noncurrent (overwritten or deleted) object version is kept before it is removed for good, in every prefix. Versioning is the undo window; this bounds what it costs."
  type        = number
  default     = 14

  validation {
    condition     = var.noncurrent_version_retention_days >= 1
    error_message = "noncurrent_version_retention_days must be at least 1."
  }
}

variable "abort_incomplete_multipart_upload_days" {
  description = "Days after which the parts of a multipart upload that was never completed (a killed writer) are deleted."
  type        = number
  default     = 2

  validation {
    condition     = var.abort_incomplete_multipart_upload_days >= 1
    error_message = "abort_incomplete_multipart_upload_days must be at least 1."
  }
}

variable "access_log_bucket" {
  description = "Name of an existing bucket that receives S3 server access logs for this bucket (under access_log_prefix). null turns server access logging off (CloudTrail S3 data events are the alternative)."
  type        = string
  default     = null
}

variable "access_log_prefix" {
  description = "Key prefix of the access log objects in access_log_bucket."
  type        = string
  default     = "s3-access/streammine/"
}

variable "kms_deletion_window_days" {
  description = "Waiting period (7-30 days) before the bucket's KMS key is deleted after a destroy. Objects encrypted with it become unreadable once it is gone."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_days >= 7 && var.kms_deletion_window_days <= 30
    error_message = "kms_deletion_window_days must be between 7 and 30."
  }
}

variable "force_destroy" {
  description = "Whether terraform destroy may delete a bucket that still holds objects. Keep false outside throw-away environments."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}
