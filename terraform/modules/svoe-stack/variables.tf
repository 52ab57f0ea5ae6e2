variable "environment" {
  description = "Environment name (dev, prod); prefixes every resource name (svoe-<environment>-...)."
  type        = string
}

variable "account_id" {
  description = "AWS account of this environment; also makes bucket names globally unique."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{12}$", var.account_id))
    error_message = "account_id must be a 12-digit AWS account id."
  }
}

variable "region" {
  description = "Region of the lake, the Glue catalog, Athena, ECR and the kops buckets."
  type        = string
}

variable "kops_clusters" {
  description = "kops cluster names of this environment (clusterName in kops/values/<environment>/*.yaml). Their service-account issuers are trusted by the IRSA roles."
  type        = list(string)
}

variable "feeds" {
  description = "Feed groups keyed by lake prefix: the namespace and ServiceAccount of their pods and the Glue databases they write (DataFeed spec.storage.glueDatabase)."
  type = map(object({
    namespace       = string
    service_account = string
    glue_databases  = set(string)
  }))
}

variable "ecr_pull_principal_arns" {
  description = "Principals of other accounts allowed to pull the images."
  type        = list(string)
  default     = []
}

variable "lake_glacier_ir_after_days" {
  description = "Move lake Parquet blocks to GLACIER_IR after this many days (modules/data-lake glacier_ir_after_days)."
  type        = number
}

variable "thanos_noncurrent_version_expiration_days" {
  description = "Keep superseded Thanos block versions this many days; the compactor's retention flags handle current blocks."
  type        = number
}

variable "athena_results_retention_days" {
  description = "Delete Athena query results after this many days (modules/glue-athena results_retention_days)."
  type        = number
}

variable "athena_bytes_scanned_cutoff_per_query" {
  description = "Cancel an Athena query of the lake workgroup once it has scanned this many bytes."
  type        = number
}

variable "compaction_service_account" {
  description = "ServiceAccount of the chart's lake compaction CronJob (compaction.serviceAccount.name); null creates no compaction role."
  type = object({
    namespace = string
    name      = string
  })
  default = { namespace = "svoe", name = "svoe-compaction" }
}
