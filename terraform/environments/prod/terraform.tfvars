# Production: feed clusters near the exchanges' matching engines (Europe, Tokyo) and the observer.
environment = "prod"
account_id  = "444455556666"
region      = "eu-west-1"

kops_clusters = [
  "eu-1.prod.svoe.io",
  "ap-1.prod.svoe.io",
  "observer.prod.svoe.io",
]

feeds = {
  market-data = {
    namespace       = "svoe"
    service_account = "svoe-feed"
    glue_databases  = ["svoe"]
  }
}
