variable "state_bucket_name" {
  description = "Globally unique name of the kops state store (KOPS_STATE_STORE=s3://<name>)."
  type        = string
}

variable "discovery_bucket_name" {
  description = "Globally unique name of the bucket holding each cluster's public OIDC discovery documents (spec.serviceAccountIssuerDiscovery.discoveryStore = s3://<name>/<cluster>/discovery)."
  type        = string
}

variable "access_log_bucket" {
  description = "Bucket that receives both buckets' S3 server access logs."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}
