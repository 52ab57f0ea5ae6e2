# Development: one feed cluster and the observer, in the development account.
environment = "dev"
account_id  = "111122223333"
region      = "eu-west-1"

kops_clusters = [
  "eu-1.dev.svoe.io",
  "observer.dev.svoe.io",
]

feeds = {
  market-data = {
    namespace       = "svoe"
    service_account = "svoe-feed"
    glue_databases  = ["svoe_dev"]
  }
}
