variable "name_prefix" {
  description = "Namespace of the repositories: <name_prefix>/<repository>."
  type        = string
  default     = "svoe"
}

variable "repositories" {
  description = "Repositories to create, one per Dockerfile target."
  type        = set(string)
  default     = ["operator", "feedpod"]
}

variable "keep_tagged_images" {
  description = "Keep this many most recent tagged images per repository; older ones expire."
  type        = number
  default     = 50
}

variable "untagged_expiry_days" {
  description = "Expire untagged images (superseded build layers) after this many days."
  type        = number
  default     = 7
}

variable "pull_principal_arns" {
  description = "IAM principals (e.g. kops node roles of other accounts) allowed to pull. Same-account nodes pull through their own IAM policy (kops iam.allowContainerRegistry) and need no entry."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}
