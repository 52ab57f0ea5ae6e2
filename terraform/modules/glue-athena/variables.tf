variable "name_prefix" {
  description = "Prefix of the workgroup and key names, e.g. svoe-prod."
  type        = string
}

variable "databases" {
  description = "Glue databases to create: the spec.storage.glueDatabase values of the DataFeeds (one table per channel is created by the feed pods)."
  type        = set(string)

  validation {
    condition     = alltrue([for d in var.databases : can(regex("^[a-z0-9_]{1,255}$", d))])
    error_message = "databases must match ^[a-z0-9_]{1,255}$ (the DataFeed glueDatabase pattern)."
  }
}

variable "lake_bucket_name" {
  description = "Lake bucket the databases describe; used as the databases' location."
  type        = string
}

variable "results_bucket_name" {
  description = "Globally unique name of the bucket for Athena query results."
  type        = string
}

variable "access_log_bucket" {
  description = "Bucket that receives the results bucket's S3 server access logs."
  type        = string
}

variable "results_retention_days" {
  description = "Delete Athena query results after this many days."
  type        = number
  default     = 30
}

variable "bytes_scanned_cutoff_per_query" {
  description = "Cancel a query of the workgroup once it has scanned this many bytes (cost guard)."
  type        = number
  default     = 107374182400 # 100 GiB
}

variable "manage_catalog_encryption" {
  description = "Encrypt the account's Glue Data Catalog (one setting per account and region) with a key of this module. Set false where another stack owns that setting."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}
