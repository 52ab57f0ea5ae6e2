variable "name" {
  description = "Globally unique name of the access-log bucket."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.name))
    error_message = "name must be a valid S3 bucket name (3-63 lower-case letters, digits, dots, hyphens)."
  }
}

variable "infrequent_access_after_days" {
  description = "Move log objects to STANDARD_IA after this many days."
  type        = number
  default     = 30
}

variable "retention_days" {
  description = "Delete log objects after this many days."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}
