# IAM role for the streammine Kubernetes service account (IRSA: IAM roles for service accounts). Only that service
# account, through the cluster's OIDC provider, can assume it; no access keys exist. The policy reaches nothing
# outside the bucket's project prefixes: listing is conditioned on s3:prefix, object actions are on PREFIX* only,
# writes only on the read-write prefixes, and the bucket's KMS key only through S3.

locals {
  issuer       = trimprefix(var.oidc_issuer_url, "https://")
  all_prefixes = distinct(concat(var.read_write_prefixes, var.read_only_prefixes))
}

data "aws_region" "current" {}

data "aws_iam_policy_document" "assume" {
  statement {
    sid     = "StreammineServiceAccount"
    effect  = "Allow"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.issuer}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${var.service_account}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "access" {
  statement {
    sid       = "ListProjectPrefixes"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = flatten([for p in local.all_prefixes : [p, "${p}*"]])
    }
  }

  # s3fs / pyarrow may ask for the bucket's region; it reveals nothing about the objects
  statement {
    sid       = "BucketRegion"
    effect    = "Allow"
    actions   = ["s3:GetBucketLocation"]
    resources = [var.bucket_arn]
  }

  statement {
    sid       = "ReadProjectObjects"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = [for p in local.all_prefixes : "${var.bucket_arn}/${p}*"]
  }

  statement {
    sid    = "WriteProjectObjects"
    effect = "Allow"
    actions = [
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = [for p in var.read_write_prefixes : "${var.bucket_arn}/${p}*"]
  }

  statement {
    sid       = "UseBucketKeyThroughS3"
    effect    = "Allow"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${data.aws_region.current.name}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name                 = var.role_name
  description          = "streammine pods (service account ${var.namespace}/${var.service_account}) via IRSA"
  assume_role_policy   = data.aws_iam_policy_document.assume.json
  permissions_boundary = var.permissions_boundary_arn
  max_session_duration = 3600
  tags                 = var.tags
}

resource "aws_iam_policy" "access" {
  name        = "${var.role_name}-bucket-access"
  description = "streammine: the project prefixes of ${var.bucket_arn} and its KMS key through S3"
  policy      = data.aws_iam_policy_document.access.json
  tags        = var.tags
}

resource "aws_iam_role_policy_attachment" "access" {
  role       = aws_iam_role.this.name
  policy_arn = aws_iam_policy.access.arn
}
