# Set in terraform.tfvars and passed to modules/svoe-stack, whose variables.tf documents and validates them.
variable "environment" { type = string }
variable "account_id" { type = string }
variable "region" { type = string }
variable "kops_clusters" { type = list(string) }
variable "feeds" {
  type = map(object({
    namespace       = string
    service_account = string
    glue_databases  = set(string)
  }))
}
variable "ecr_pull_principal_arns" {
  type    = list(string)
  default = []
}
