output "bucket_name" {
  description = "Name of the bucket."
  value       = aws_s3_bucket.this.bucket
}

output "bucket_arn" {
  description = "ARN of the bucket, built from its name so that it is known at plan time."
  value       = "arn:${data.aws_partition.current.partition}:s3:::${aws_s3_bucket.this.bucket}"
}

output "kms_key_arn" {
  description = "ARN of the KMS key that encrypts the bucket's objects; readers and writers need kms:Decrypt and kms:GenerateDataKey on it."
  value       = aws_kms_key.bucket.arn
}

output "prefixes" {
  description = "The application's key prefixes in the bucket, by name (input, models, embeddings, negatives); each ends with a slash."
  value       = local.prefixes
}

output "expiring_prefixes" {
  description = "Prefix => days after which current objects under it expire (prefixes with a null retention are absent)."
  value       = local.expirations
}
