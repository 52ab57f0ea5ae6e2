variable "environment" {
  description = "Environment name; prefixes every resource name (svoe-<environment>-...)."
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
