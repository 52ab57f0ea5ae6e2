variable "bucket_name" {
  description = "Globally unique name of the lake bucket."
  type        = string
}

variable "access_log_bucket" {
  description = "Bucket that receives the lake bucket's S3 server access logs."
  type        = string
}

variable "feed_prefixes" {
  description = "Top-level key prefixes of the lake, one per group of feeds (each gets its own IRSA role). A DataFeed's spec.storage.lake is s3://<bucket>/<prefix>."
  type        = set(string)

  validation {
    condition     = alltrue([for p in var.feed_prefixes : can(regex("^[a-z0-9][a-z0-9-]*$", p))])
    error_message = "feed_prefixes must be lower-case words (letters, digits, '-') without slashes."
  }
}

variable "infrequent_access_after_days" {
  description = "Move Parquet blocks to STANDARD_IA after this many days (the minimum S3 allows is 30)."
  type        = number
  default     = 30

  validation {
    condition     = var.infrequent_access_after_days >= 30
    error_message = "infrequent_access_after_days must be at least 30 (S3 rejects earlier STANDARD_IA transitions)."
  }
}

variable "glacier_ir_after_days" {
  description = "Move Parquet blocks to GLACIER_IR after this many days. Glacier Instant Retrieval stays queryable by Athena and DuckDB without a restore."
  type        = number
  default     = 180

  validation {
    condition     = var.glacier_ir_after_days >= 90
    error_message = "glacier_ir_after_days must be at least 90 and leave 30 days in STANDARD_IA."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Keep overwritten or deleted blocks this many days (undo window for a bad rewrite)."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}
