# IAM roles for Kubernetes ServiceAccounts (IRSA). The pod identity webhook (kops:
# podIdentityWebhook.enabled) injects a projected token for ServiceAccounts annotated with
# eks.amazonaws.com/role-arn; AWS SDKs exchange it through sts:AssumeRoleWithWebIdentity.
# No static keys exist anywhere.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name

  providers = [for idx, issuer in var.oidc_issuers : {
    sid    = "WebIdentityCluster${idx}"
    issuer = issuer
    arn    = "arn:${local.partition}:iam::${local.account_id}:oidc-provider/${issuer}"
  }]

  lake_bucket_name = element(split(":", var.lake_bucket_arn), 5)
  glue_catalog_arn = "arn:${local.partition}:glue:${local.region}:${local.account_id}:catalog"

  # Who may assume each role: role key -> ServiceAccount subjects.
  trust_subjects = merge(
    { for k, f in var.feeds : "feed-${k}" => ["system:serviceaccount:${f.namespace}:${f.service_account}"] },
    { thanos = [for sa in var.thanos_service_accounts : "system:serviceaccount:${sa.namespace}:${sa.name}"] },
    var.compaction_service_account == null ? {} : {
      compaction = ["system:serviceaccount:${var.compaction_service_account.namespace}:${var.compaction_service_account.name}"]
    },
  )
}

# One trust policy per role: the clusters' OIDC providers, for the named ServiceAccounts only.
data "aws_iam_policy_document" "trust" {
  for_each = local.trust_subjects

  dynamic "statement" {
    for_each = local.providers
    content {
      sid     = statement.value.sid
      effect  = "Allow"
      actions = ["sts:AssumeRoleWithWebIdentity"]
      principals {
        type        = "Federated"
        identifiers = [statement.value.arn]
      }
      condition {
        test     = "StringEquals"
        variable = "${statement.value.issuer}:sub"
        values   = each.value
      }
      condition {
        test     = "StringEquals"
        variable = "${statement.value.issuer}:aud"
        values   = ["sts.amazonaws.com"]
      }
    }
  }
}

# The lake's KMS key, only through S3: part of every role that reads or writes the lake.
data "aws_iam_policy_document" "lake_key_through_s3" {
  statement {
    sid       = "LakeKeyThroughS3"
    effect    = "Allow"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [var.lake_kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com"]
    }
  }
}

# ---------------------------------------------------------------------------------------------
# Feed pods: write Parquet blocks under their own lake prefix, maintain their databases' tables
# and partitions, nothing else.

resource "aws_iam_role" "feed" {
  for_each = var.feeds

  name                 = "${var.name_prefix}-feed-${each.key}"
  description          = "svoe feed pods ${each.value.namespace}/${each.value.service_account}: lake prefix ${each.value.lake_prefix}/"
  assume_role_policy   = data.aws_iam_policy_document.trust["feed-${each.key}"].json
  max_session_duration = var.max_session_duration
  tags                 = var.tags
}

data "aws_iam_policy_document" "feed" {
  for_each = var.feeds

  source_policy_documents = [data.aws_iam_policy_document.lake_key_through_s3.json]

  statement {
    sid       = "ListOwnPrefix"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [var.lake_bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [each.value.lake_prefix, "${each.value.lake_prefix}/*"]
    }
  }

  # Blocks are named by their first Redis stream id, so a retried flush overwrites the same key:
  # no delete is needed and none is granted.
  statement {
    sid    = "ReadWriteOwnPrefix"
    effect = "Allow"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${var.lake_bucket_arn}/${each.value.lake_prefix}/*"]
  }

  statement {
    sid    = "GlueTablesAndPartitions"
    effect = "Allow"
    actions = [
      "glue:GetDatabase",
      "glue:GetTable",
      "glue:GetTables",
      "glue:CreateTable",
      "glue:UpdateTable",
      "glue:GetPartition",
      "glue:GetPartitions",
      "glue:BatchGetPartition",
      "glue:CreatePartition",
      "glue:BatchCreatePartition",
      "glue:UpdatePartition",
    ]
    resources = concat(
      [local.glue_catalog_arn],
      [for d in sort(tolist(each.value.glue_databases)) : "arn:${local.partition}:glue:${local.region}:${local.account_id}:database/${d}"],
      [for d in sort(tolist(each.value.glue_databases)) : "arn:${local.partition}:glue:${local.region}:${local.account_id}:table/${d}/*"],
    )
  }

  dynamic "statement" {
    for_each = var.glue_catalog_kms_key_arn == null ? [] : [var.glue_catalog_kms_key_arn]
    content {
      sid       = "CatalogKeyThroughGlue"
      effect    = "Allow"
      actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["glue.${local.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_policy" "feed" {
  for_each = var.feeds

  name        = "${var.name_prefix}-feed-${each.key}"
  description = "Write s3://${local.lake_bucket_name}/${each.value.lake_prefix}/ and the Glue tables of ${join(", ", sort(tolist(each.value.glue_databases)))}."
  policy      = data.aws_iam_policy_document.feed[each.key].json
  tags        = var.tags
}

resource "aws_iam_role_policy_attachment" "feed" {
  for_each = var.feeds

  role       = aws_iam_role.feed[each.key].name
  policy_arn = aws_iam_policy.feed[each.key].arn
}

# ---------------------------------------------------------------------------------------------
# Thanos: sidecars upload 2h TSDB blocks, the store gateway reads them, the compactor rewrites
# and deletes them. Only the Thanos bucket.

resource "aws_iam_role" "thanos" {
  name                 = "${var.name_prefix}-thanos"
  description          = "Thanos sidecars, store gateway and compactor: the Thanos block bucket"
  assume_role_policy   = data.aws_iam_policy_document.trust["thanos"].json
  max_session_duration = var.max_session_duration
  tags                 = var.tags
}

data "aws_iam_policy_document" "thanos" {
  statement {
    sid       = "ListBucket"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [var.thanos_bucket_arn]
  }

  statement {
    sid    = "Blocks"
    effect = "Allow"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${var.thanos_bucket_arn}/*"]
  }

  statement {
    sid       = "BucketKeyThroughS3"
    effect    = "Allow"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [var.thanos_kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_policy" "thanos" {
  name        = "${var.name_prefix}-thanos"
  description = "Read, write and compact Thanos blocks in ${element(split(":", var.thanos_bucket_arn), 5)}."
  policy      = data.aws_iam_policy_document.thanos.json
  tags        = var.tags
}

resource "aws_iam_role_policy_attachment" "thanos" {
  role       = aws_iam_role.thanos.name
  policy_arn = aws_iam_policy.thanos.arn
}

# ---------------------------------------------------------------------------------------------
# Lake compaction (charts/svoe compaction CronJob): rewrites closed partitions of every feed
# prefix, so it lists, reads, writes and deletes objects there. Glue partitions keep their
# locations, so no catalog access is granted.

resource "aws_iam_role" "compaction" {
  count = var.compaction_service_account == null ? 0 : 1

  name                 = "${var.name_prefix}-compaction"
  description          = "svoe lake compaction ${var.compaction_service_account.namespace}/${var.compaction_service_account.name}: the feeds' lake prefixes"
  assume_role_policy   = data.aws_iam_policy_document.trust["compaction"].json
  max_session_duration = var.max_session_duration
  tags                 = var.tags
}

data "aws_iam_policy_document" "compaction" {
  count = var.compaction_service_account == null ? 0 : 1

  source_policy_documents = [data.aws_iam_policy_document.lake_key_through_s3.json]

  statement {
    sid       = "ListFeedPrefixes"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [var.lake_bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = flatten([for f in values(var.feeds) : [f.lake_prefix, "${f.lake_prefix}/*"]])
    }
  }

  # Delete: the small blocks go once the compacted files are durable (svoe/lake/compact.py).
  statement {
    sid    = "RewriteFeedPrefixes"
    effect = "Allow"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = distinct([for f in values(var.feeds) : "${var.lake_bucket_arn}/${f.lake_prefix}/*"])
  }
}

resource "aws_iam_policy" "compaction" {
  count = var.compaction_service_account == null ? 0 : 1

  name        = "${var.name_prefix}-compaction"
  description = "Compact the feeds' prefixes of s3://${local.lake_bucket_name}/."
  policy      = data.aws_iam_policy_document.compaction[0].json
  tags        = var.tags
}

resource "aws_iam_role_policy_attachment" "compaction" {
  count = var.compaction_service_account == null ? 0 : 1

  role       = aws_iam_role.compaction[0].name
  policy_arn = aws_iam_policy.compaction[0].arn
}
