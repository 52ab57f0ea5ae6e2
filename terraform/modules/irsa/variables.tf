variable "name_prefix" {
  description = "Prefix of the role and policy names, e.g. svoe-prod."
  type        = string
}

variable "oidc_issuers" {
  description = "Service-account issuers of the clusters whose pods may assume these roles, without https:// (for kops: the HTTPS form of spec.serviceAccountIssuerDiscovery.discoveryStore). kops creates the IAM OIDC providers (enableAWSOIDCProvider)."
  type        = list(string)

  validation {
    condition     = length(var.oidc_issuers) > 0 && alltrue([for i in var.oidc_issuers : !startswith(i, "https://")])
    error_message = "oidc_issuers needs at least one issuer, each without the https:// scheme."
  }
}

variable "lake_bucket_arn" {
  description = "ARN of the lake bucket (modules/data-lake)."
  type        = string
}

variable "lake_kms_key_arn" {
  description = "ARN of the lake bucket's KMS key."
  type        = string
}

variable "glue_catalog_kms_key_arn" {
  description = "ARN of the Glue Data Catalog KMS key, or null when the catalog is not encrypted with a customer key."
  type        = string
  default     = null
}

variable "feeds" {
  description = "One role per group of feed pods, keyed by a short name: the namespace and ServiceAccount of the pods, the lake prefix they may write (s3://<lake>/<lake_prefix>/...) and the Glue databases whose tables and partitions they may manage."
  type = map(object({
    namespace       = string
    service_account = string
    lake_prefix     = string
    glue_databases  = set(string)
  }))

  validation {
    condition     = alltrue([for f in values(var.feeds) : can(regex("^[a-z0-9][a-z0-9-]*$", f.lake_prefix))])
    error_message = "feeds[*].lake_prefix must be a single lower-case path segment without slashes."
  }
}

variable "thanos_bucket_arn" {
  description = "ARN of the Thanos block bucket."
  type        = string
}

variable "thanos_kms_key_arn" {
  description = "ARN of the Thanos bucket's KMS key."
  type        = string
}

variable "thanos_service_accounts" {
  description = "ServiceAccounts that use the Thanos role: the Prometheus (sidecar upload) on every cluster and the store gateway / compactor on the observer."
  type = list(object({
    namespace = string
    name      = string
  }))
  default = [
    { namespace = "monitoring", name = "prometheus" },
    { namespace = "monitoring", name = "thanos-storage" },
  ]
}

variable "compaction_service_account" {
  description = "ServiceAccount of the lake compaction CronJob (charts/svoe compaction.serviceAccount.name); its role may list, read, write and delete under every feed's lake prefix. null creates no role."
  type = object({
    namespace = string
    name      = string
  })
  default = null
}

variable "max_session_duration" {
  description = "Maximum session length of the roles, in seconds."
  type        = number
  default     = 3600
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}
