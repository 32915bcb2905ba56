# The object-storage bucket streammine reads from and writes to. Layout (the application's, not configurable here):
#   input/       corpora and queries (read by the pipeline)
#   models/      checkpoints, by model version
#   embeddings/  the embedding store, by model version
#   negatives/   mining outputs
# Versioned, SSE-KMS with a dedicated key, TLS only, public access blocked, ACLs disabled; lifecycle rules expire
# old model versions, old embeddings and old negatives, noncurrent versions and abandoned multipart uploads.

locals {
  prefixes = {
    input      = "input/"
    models     = "models/"
    embeddings = "embeddings/"
    negatives  = "negatives/"
  }

  # prefix => days; a null retention means no expiration rule for that prefix
  expirations = {
    for name, days in {
      models     = var.model_version_retention_days
      embeddings = var.model_version_retention_days
      negatives  = var.negatives_retention_days
    } : local.prefixes[name] => days if days != null
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

resource "aws_kms_key" "bucket" {
  description             = "streammine: server-side encryption of s3://${var.bucket_name}"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days

  # The account administers the key; principals (the IRSA role) get usage through their own IAM policies, limited
  # to calls made by S3 (kms:ViaService).
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "AccountAdministersKey"
      Effect    = "Allow"
      Principal = { AWS = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root" }
      Action    = "kms:*"
      Resource  = "*"
    }]
  })

  tags = var.tags
}

resource "aws_kms_alias" "bucket" {
  name          = "alias/streammine-${var.bucket_name}"
  target_key_id = aws_kms_key.bucket.key_id
}

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_144:Cross-region replication is not enabled: models/, embeddings/ and negatives/ are derived data that a run recreates, and input/ is a copy of corpora whose source of truth lives elsewhere. Add aws_s3_bucket_replication_configuration where a second region is required.
  #checkov:skip=CKV2_AWS_62:No consumer of S3 event notifications exists: the pipeline discovers inputs by listing and writes a summary file when a run is complete.
  bucket        = var.bucket_name
  force_destroy = var.force_destroy
  tags          = var.tags
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket = aws_s3_bucket.this.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.bucket.arn
    }
    # one KMS call per bucket instead of per object: large embedding stores write many objects
    bucket_key_enabled = true
  }
}

data "aws_iam_policy_document" "tls_only" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.this.arn,
      "${aws_s3_bucket.this.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  bucket = aws_s3_bucket.this.id
  policy = data.aws_iam_policy_document.tls_only.json

  # a bucket policy put before the public access block exists can be rejected
  depends_on = [aws_s3_bucket_public_access_block.this]
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  # Whole bucket: remove overwritten/deleted versions after a while and parts of abandoned multipart uploads.
  rule {
    id     = "noncurrent-versions-and-incomplete-uploads"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_retention_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_upload_days
    }
  }

  # models/, embeddings/, negatives/: current objects expire (become noncurrent, then go with the rule above).
  # input/ never expires.
  dynamic "rule" {
    for_each = local.expirations

    content {
      id     = "expire-${trimsuffix(rule.key, "/")}"
      status = "Enabled"

      filter {
        prefix = rule.key
      }

      expiration {
        days = rule.value
      }
    }
  }

  # rules on a versioned bucket must see versioning enabled first
  depends_on = [aws_s3_bucket_versioning.this]
}

resource "aws_s3_bucket_logging" "this" {
  count = var.access_log_bucket == null ? 0 : 1

  bucket        = aws_s3_bucket.this.id
  target_bucket = var.access_log_bucket
  target_prefix = var.access_log_prefix
}
