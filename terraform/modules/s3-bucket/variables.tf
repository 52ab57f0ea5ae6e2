variable "name" {
  description = "Globally unique bucket name."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.name))
    error_message = "name must be a valid S3 bucket name (3-63 lower-case letters, digits, dots, hyphens)."
  }
}

variable "access_log_bucket" {
  description = "Name of the bucket that receives this bucket's S3 server access logs (see modules/s3-access-logs)."
  type        = string
}

variable "kms_deletion_window_days" {
  description = "Waiting period before the bucket's KMS key is deleted once scheduled for deletion."
  type        = number
  default     = 30
}

variable "transitions" {
  description = "Storage-class transitions of current object versions, oldest last. Empty keeps everything in STANDARD."
  type = list(object({
    days          = number
    storage_class = string
  }))
  default = []
}

variable "expiration_days" {
  description = "Delete current object versions after this many days; null keeps them forever."
  type        = number
  default     = null
}

variable "noncurrent_version_expiration_days" {
  description = "Delete overwritten/deleted (noncurrent) object versions after this many days."
  type        = number
  default     = 90
}

variable "abort_incomplete_multipart_days" {
  description = "Abort multipart uploads that have not completed after this many days."
  type        = number
  default     = 7
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}
