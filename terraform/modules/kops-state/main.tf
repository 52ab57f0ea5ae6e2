# The two buckets kops needs before `kops create -f`: the private state store (cluster specs,
# CA keys, node bootstrap configs) and the public OIDC discovery store that lets AWS STS verify
# service-account tokens for IRSA.

module "state" {
  source = "../s3-bucket"

  name                               = var.state_bucket_name
  access_log_bucket                  = var.access_log_bucket
  transitions                        = []
  expiration_days                    = null
  noncurrent_version_expiration_days = 90
  abort_incomplete_multipart_days    = 1
  tags                               = var.tags
}

resource "aws_s3_bucket" "discovery" {
  #checkov:skip=CKV_AWS_144:Holds only OIDC discovery documents that kops rewrites on every update; nothing to recover from a replica.
  #checkov:skip=CKV_AWS_145:Anonymous readers (AWS STS fetching the JWKS) cannot use a KMS key; SSE-S3 (AES256) is set below.
  #checkov:skip=CKV2_AWS_6:The public access block below keeps ACLs blocked but must allow the bucket policy that makes the OIDC discovery documents public (see CKV_AWS_54).
  bucket = var.discovery_bucket_name
  tags   = var.tags
}

resource "aws_s3_bucket_ownership_controls" "discovery" {
  bucket = aws_s3_bucket.discovery.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "discovery" {
  #checkov:skip=CKV_AWS_54:The OIDC discovery documents must be public for AWS STS to validate IRSA tokens; the bucket policy below exposes only the openid-configuration and JWKS objects (public keys, no secrets).
  #checkov:skip=CKV_AWS_56:Same as CKV_AWS_54: the bucket policy grants anonymous GetObject on the two discovery documents per cluster and nothing else.
  bucket                  = aws_s3_bucket.discovery.id
  block_public_acls       = true
  ignore_public_acls      = true
  block_public_policy     = false
  restrict_public_buckets = false
}

resource "aws_s3_bucket_versioning" "discovery" {
  bucket = aws_s3_bucket.discovery.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "discovery" {
  bucket = aws_s3_bucket.discovery.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_logging" "discovery" {
  bucket        = aws_s3_bucket.discovery.id
  target_bucket = var.access_log_bucket
  target_prefix = "${var.discovery_bucket_name}/"
}

resource "aws_s3_bucket_lifecycle_configuration" "discovery" {
  bucket = aws_s3_bucket.discovery.id

  rule {
    id     = "old-versions"
    status = "Enabled"
    filter {}

    noncurrent_version_expiration {
      noncurrent_days = 30
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.discovery]
}

data "aws_iam_policy_document" "discovery" {
  statement {
    sid     = "PublicOIDCDiscovery"
    effect  = "Allow"
    actions = ["s3:GetObject"]
    resources = [
      "${aws_s3_bucket.discovery.arn}/*/discovery/.well-known/openid-configuration",
      "${aws_s3_bucket.discovery.arn}/*/discovery/openid/v1/jwks",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
  }

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.discovery.arn,
      "${aws_s3_bucket.discovery.arn}/*",
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

resource "aws_s3_bucket_policy" "discovery" {
  bucket     = aws_s3_bucket.discovery.id
  policy     = data.aws_iam_policy_document.discovery.json
  depends_on = [aws_s3_bucket_public_access_block.discovery]
}

resource "aws_s3_bucket_notification" "discovery" {
  bucket      = aws_s3_bucket.discovery.id
  eventbridge = true
}
